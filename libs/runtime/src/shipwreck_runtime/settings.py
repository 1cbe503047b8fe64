"""Settings come from the environment once, into a frozen Struct per service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import msgspec

PREFIX = "SHIPWRECK_"

S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(ValueError):
    """One or more environment variables hold values the service cannot use."""


def env_name(field: str, prefix: str = PREFIX) -> str:
    """The environment variable that sets ``field`` (``amqp_url`` -> ``SHIPWRECK_AMQP_URL``)."""
    return f"{prefix}{field.upper()}"


def load_settings(
    cls: type[S], environ: Mapping[str, str] | None = None, *, prefix: str = PREFIX
) -> S:
    """Build ``cls`` from ``SHIPWRECK_*`` variables; unset ones keep the Struct's defaults.

    Values are converted from text (``"8080"`` to an int, ``"true"`` to a bool). A bad value
    raises :class:`SettingsError` naming the variable, the value and the expected type.
    """
    source = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        name = env_name(field.encode_name, prefix)
        if name in source:
            raw[field.encode_name] = source[name]
    try:
        return msgspec.convert(raw, type=cls, strict=False)
    except msgspec.ValidationError as e:
        raise SettingsError(_explain(e, raw, prefix)) from None


def _explain(error: msgspec.ValidationError, raw: Mapping[str, str], prefix: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.api_port`": name the variable instead.
    text = str(error)
    if " - at `$." in text:
        problem, _, path = text.partition(" - at `$.")
        field = path.rstrip("`").split(".")[0].split("[")[0]
        return f"{env_name(field, prefix)}={raw.get(field, '')!r} is not valid: {problem}"
    return text
