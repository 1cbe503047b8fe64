"""Moments the user names on the command line: ISO 8601, ``now``, or relative (``-5m``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^-?((?:\d+(?:\.\d+)?[smhdw])+)(?:\s*ago)?$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


NEGATIVE = re.compile(r"^-(?:\d+(?:\.\d+)?[smhdw])+$")
"""A relative time as typed (``-5m``): argparse would take it for an option."""


def shield_negative(argv: list[str]) -> list[str]:
    """``argv`` with relative times spelled ``5m ago`` instead of ``-5m``, so that they
    reach the command as values (no option of the CLI looks like one)."""
    return [f"{arg[1:]} ago" if NEGATIVE.match(arg) else arg for arg in argv]


class BadTime(ValueError):
    """The text names no moment this CLI understands."""


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """The moment ``text`` names, as an aware UTC datetime.

    Accepted: ``now``; a duration back from now (``-5m``, ``-1h30m``, ``2d``, ``90s ago``;
    units s, m, h, d, w); an ISO 8601 date or time (``2026-01-02T03:04:05Z``,
    ``2026-01-02 03:04``, ``2026-01-02``). A time without an offset is local time.
    """
    value = text.strip().lower()
    current = now if now is not None else datetime.now(UTC)
    if value == "now":
        return current.astimezone(UTC)
    relative = _RELATIVE.match(value)
    if relative:
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(relative.group(1)))
        return (current - timedelta(seconds=seconds)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadTime(
            f"{text!r} is not a time: give an ISO 8601 time (2026-01-02T03:04:05Z), "
            "'now', or a duration back from now (-5m, -2h, -1d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time, as the user's clock shows it
    return parsed.astimezone(UTC)
