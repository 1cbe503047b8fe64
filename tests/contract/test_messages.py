"""Messages survive the wire: round trips, tagged unions, evolution, validation errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipwreck_contracts import (
    ALL_MESSAGES,
    AnyMessage,
    Message,
    RequestDeployment,
    Trigger,
    decode,
    decode_message,
    encode,
    tag_of,
)
from tests.contract.strategies import for_type

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
DEPLOYMENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _request_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "deployment.request.v1",
        "deployment_id": str(DEPLOYMENT_ID),
        "repo_url": "https://git.example.com/team/hello.git",
        "actor": "alice",
        "requested_at": "2025-01-02T03:04:05Z",
    }
    payload.update(changes)
    return payload


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_message_round_trips_through_json(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(for_type(cls))
    assert decode(encode(message), cls) == message


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_decoding_into_the_union_picks_the_class_by_tag(
    cls: type[Message], data: st.DataObject
) -> None:
    message = data.draw(for_type(cls))
    decoded = decode_message(encode(message))
    assert type(decoded) is cls
    assert decoded == message


def test_encoded_message_carries_its_tag_as_type() -> None:
    message = RequestDeployment(
        deployment_id=DEPLOYMENT_ID, repo_url="https://x.test/a.git", actor="a", requested_at=AT
    )
    assert json.loads(encode(message))["type"] == "deployment.request.v1"


def test_decode_accepts_the_union_type_directly() -> None:
    decoded = decode(json.dumps(_request_payload()), AnyMessage)
    assert isinstance(decoded, RequestDeployment)


def test_defaults_fill_fields_a_producer_left_out() -> None:
    decoded = decode(json.dumps(_request_payload()), RequestDeployment)
    assert (decoded.branch, decoded.watch, decoded.trigger) == ("main", True, Trigger.MANUAL)
    assert decoded.app is None
    assert decoded.commit is None


class _GreetingV1(Message, tag="test.greeting.v1", frozen=True, kw_only=True):
    """A message as first published."""

    name: str


class _GreetingV1Evolved(Message, tag="test.greeting.v1", frozen=True, kw_only=True):
    """The same message after a compatible change: a new field with a default."""

    name: str
    language: str = "en"


def test_an_old_payload_decodes_into_the_evolved_message() -> None:
    old_payload = encode(_GreetingV1(name="ada"))
    assert decode(old_payload, _GreetingV1Evolved) == _GreetingV1Evolved(name="ada")


def test_a_new_payload_decodes_into_the_old_message_ignoring_the_new_field() -> None:
    new_payload = encode(_GreetingV1Evolved(name="ada", language="fr"))
    assert decode(new_payload, _GreetingV1) == _GreetingV1(name="ada")


def test_a_wrong_type_is_a_validation_error_naming_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.deployment_id"):
        decode(json.dumps(_request_payload(deployment_id=42)), RequestDeployment)


def test_a_wrong_type_in_the_union_names_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.watch"):
        decode_message(json.dumps(_request_payload(watch="yes")))


def test_a_missing_required_field_is_named() -> None:
    payload = _request_payload()
    del payload["actor"]
    with pytest.raises(msgspec.ValidationError, match="actor"):
        decode_message(json.dumps(payload))


def test_a_naive_timestamp_is_rejected() -> None:
    payload = _request_payload(requested_at="2025-01-02T03:04:05")
    with pytest.raises(msgspec.ValidationError, match=r"timezone.*\$\.requested_at"):
        decode_message(json.dumps(payload))


def test_an_app_name_that_is_not_a_dns_label_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.app"):
        decode_message(json.dumps(_request_payload(app="My_App")))


def test_an_abbreviated_commit_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.commit"):
        decode_message(json.dumps(_request_payload(commit="abc1234")))


def test_an_unknown_tag_is_a_validation_error_naming_type() -> None:
    payload = _request_payload(type="deployment.teleport.v1")
    with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
        decode_message(json.dumps(payload))


def test_a_payload_of_another_tag_does_not_decode_as_this_message() -> None:
    payload = _request_payload(type="deployment.cancel.v1")
    with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
        decode(json.dumps(payload), RequestDeployment)


def test_bytes_that_are_not_json_are_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_message(b"\x00not json")
