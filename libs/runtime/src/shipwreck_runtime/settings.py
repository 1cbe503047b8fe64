"""Settings come from the environment once, into a frozen Struct per service.

What a setting allows is declared on its Struct field (``Annotated`` with ``msgspec.Meta``
bounds, or one of the aliases below), so one place both checks a value and explains the
check: a bad value stops the process at start, before it connects anywhere, with one line
naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Final, NoReturn, TypeVar

import msgspec

PREFIX = "SHIPWRECK_"

S = TypeVar("S", bound=msgspec.Struct)

EXIT_BAD_SETTING: Final = 2
"""The exit status of a process stopped by a bad setting (as for a bad command line)."""

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
"""A duration or interval that must be longer than nothing (a zero interval spins)."""

Seconds = Annotated[float, msgspec.Meta(ge=0)]
"""A duration where 0 means "not at all"."""

Count = Annotated[int, msgspec.Meta(ge=1)]
"""How many of something to keep or run: at least one."""

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
"""A TCP port to listen on or connect to."""

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

LogLevel = Annotated[
    str,
    msgspec.Meta(
        pattern=f"(?i)^({'|'.join(LOG_LEVELS)})$",
        extra={"allowed": f"one of {', '.join(LOG_LEVELS)} (any case)"},
    ),
]
"""A :mod:`logging` level name, in any case."""


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use; the message names the
    variable, the value and what is allowed."""


def env_name(field: str, prefix: str = PREFIX) -> str:
    """The environment variable that sets ``field`` (``amqp_url`` -> ``SHIPWRECK_AMQP_URL``)."""
    return f"{prefix}{field.upper()}"


def load_settings(
    cls: type[S], environ: Mapping[str, str] | None = None, *, prefix: str = PREFIX
) -> S:
    """Build ``cls`` from ``SHIPWRECK_*`` variables; unset ones keep the Struct's defaults.

    Values are converted from text (``"8080"`` to an int, ``"true"`` to a bool) and checked
    against the field's bounds; numbers must be finite. A bad value raises
    :class:`SettingsError`, for example ``SHIPWRECK_LEDGER_ENTRIES=0 is not allowed: it must
    be at least 1``.
    """
    source = os.environ if environ is None else environ
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    raw: dict[str, str] = {}
    for name in fields:
        variable = env_name(name, prefix)
        if variable in source:
            raw[name] = source[variable]
    try:
        settings = msgspec.convert(raw, type=cls, strict=False)
    except msgspec.ValidationError as e:
        name = _field_at(str(e))
        if name not in raw:  # not about one variable: say what msgspec says
            raise SettingsError(str(e)) from None
        raise SettingsError(_refusal(fields[name].type, name, raw[name], prefix)) from None
    for name, value in raw.items():
        converted = getattr(settings, fields[name].name)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise SettingsError(_refusal(fields[name].type, name, value, prefix))
    return settings


def load_settings_or_exit(cls: type[S], program: str) -> S:
    """:func:`load_settings` for a process's entry point: on a bad value, write
    ``<program>: <what is wrong>`` on stderr and exit with status 2, with no traceback."""
    try:
        return load_settings(cls)
    except SettingsError as e:
        exit_with(program, str(e))


def exit_with(program: str, problem: str) -> NoReturn:
    """End the process at start over a bad setting: one line on stderr, status 2."""
    print(f"{program}: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_SETTING)


def _field_at(error: str) -> str:
    # msgspec ends its message with where the bad value is: "... - at `$.api_port`".
    _, found, path = error.partition(" - at `$.")
    return path.rstrip("`").split(".")[0].split("[")[0] if found else ""


def _refusal(annotation: Any, name: str, value: str, prefix: str) -> str:
    return (
        f"{env_name(name, prefix)}={shlex.quote(value)} is not allowed: "
        f"it must be {_allowed(msgspec.inspect.type_info(annotation), value)}"
    )


def _allowed(info: msgspec.inspect.Type, value: str) -> str:
    """What a field of type ``info`` takes, in words; bounds alone when ``value`` already
    has the right kind (``0`` for a count: "at least 1", not "a whole number of at least 1")."""
    optional = False
    if isinstance(info, msgspec.inspect.UnionType):
        members = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        optional = len(members) < len(info.types)
        if len(members) != 1:
            return " or ".join(_allowed(t, value) for t in members)
        info = members[0]
    unset = ", or unset" if optional else ""
    if isinstance(info, msgspec.inspect.Metadata):
        if info.extra and "allowed" in info.extra:
            return f"{info.extra['allowed']}{unset}"
        info = info.type
    if isinstance(info, msgspec.inspect.BoolType):
        return f"true or false (or 1 or 0){unset}"
    if isinstance(info, msgspec.inspect.LiteralType):
        return f"one of {', '.join(map(str, info.values))}{unset}"
    if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        kind = "a whole number" if isinstance(info, msgspec.inspect.IntType) else "a number"
        bounds = _bounds(info)
        if bounds and _converts(value, int if kind == "a whole number" else float):
            return f"{bounds}{unset}"
        if not bounds:
            return f"{kind}{unset}"
        return f"{kind} {'of ' if bounds.startswith('at ') else ''}{bounds}{unset}"
    if isinstance(info, msgspec.inspect.StrType) and info.pattern:
        return f"text matching {info.pattern}{unset}"
    return f"{type(info).__name__.removesuffix('Type').lower()}{unset}"


def _bounds(info: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> str:
    low = f"at least {info.ge:g}" if info.ge is not None else None
    if info.gt is not None:
        low = f"greater than {info.gt:g}"
    high = f"at most {info.le:g}" if info.le is not None else None
    if info.lt is not None:
        high = f"less than {info.lt:g}"
    if info.ge is not None and info.le is not None:
        return f"from {info.ge:g} to {info.le:g}"
    return " and ".join(b for b in (low, high) if b)


def _converts(value: str, kind: type[int] | type[float]) -> bool:
    try:
        number = msgspec.convert(value, type=kind, strict=False)
    except msgspec.ValidationError:
        return False
    return math.isfinite(number)
