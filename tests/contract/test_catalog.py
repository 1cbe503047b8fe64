"""The message catalogue: every message is listed, tagged, frozen and keyword-only."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import msgspec
import pytest

import shipwreck_contracts
from shipwreck_contracts import (
    ALL_MESSAGES,
    MESSAGES_BY_TAG,
    Message,
    RequestDeployment,
    message_class,
    tag_of,
)

TAG_RE = re.compile(r"^[a-z]+(-[a-z]+)*\.[a-z]+(-[a-z]+)*\.v[0-9]+$")


def _message_classes_in_package() -> set[type[Message]]:
    for module in pkgutil.walk_packages(shipwreck_contracts.__path__, "shipwreck_contracts."):
        importlib.import_module(module.name)
    found: set[type[Message]] = set()
    pending = list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        # Tests define their own Message subclasses; only the package's own count here.
        if cls.__module__.startswith("shipwreck_contracts."):
            found.add(cls)
    return found


def test_every_message_class_in_the_package_is_in_all_messages() -> None:
    assert _message_classes_in_package() == set(ALL_MESSAGES)


def test_tags_are_unique() -> None:
    tags = [tag_of(cls) for cls in ALL_MESSAGES]
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_tag_is_context_name_version(cls: type[Message]) -> None:
    assert TAG_RE.match(tag_of(cls))


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_message_is_frozen(cls: type[Message]) -> None:
    assert cls.__struct_config__.frozen


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_message_fields_are_keyword_only(cls: type[Message]) -> None:
    kinds = {param.kind for param in inspect.signature(cls).parameters.values()}
    assert kinds <= {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_message_ignores_unknown_fields_so_producers_can_evolve_first(
    cls: type[Message],
) -> None:
    assert not cls.__struct_config__.forbid_unknown_fields


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_message_has_a_docstring(cls: type[Message]) -> None:
    assert (cls.__doc__ or "").strip()


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_message_timestamps_must_be_timezone_aware(cls: type[Message]) -> None:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        inner = field.type
        while isinstance(inner, msgspec.inspect.Metadata):
            inner = inner.type
        if isinstance(inner, msgspec.inspect.DateTimeType):
            assert inner.tz is True, field.name


def test_messages_by_tag_finds_every_message() -> None:
    assert all(MESSAGES_BY_TAG[tag_of(cls)] is cls for cls in ALL_MESSAGES)


def test_message_class_looks_up_a_tag() -> None:
    assert message_class("deployment.request.v1") is RequestDeployment


def test_message_class_names_an_unknown_tag() -> None:
    with pytest.raises(KeyError, match=r"deployment\.teleport\.v1"):
        message_class("deployment.teleport.v1")
