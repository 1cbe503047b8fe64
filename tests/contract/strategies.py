"""Hypothesis strategies built from msgspec's own view of a type.

Building from ``msgspec.inspect.type_info`` rather than ``st.from_type`` means the values
respect the ``Meta`` constraints (patterns, bounds, timezone-awareness), so every generated
message is one a consumer must accept; a new message or field needs no test change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec.inspect as mi
from hypothesis import strategies as st

# msgspec encodes integers within 64 bits; anything wider is not a valid message.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]


def for_type(annotation: Any) -> st.SearchStrategy[Any]:
    """Return a strategy for values of ``annotation`` that msgspec decodes back equal."""
    return _strategy(mi.type_info(annotation))


def _strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    match info:
        case mi.Metadata(type=inner):
            return _strategy(inner)
        case mi.StructType(cls=cls, fields=fields):
            return st.builds(cls, **{field.name: _strategy(field.type) for field in fields})
        case mi.UnionType(types=types):
            return st.one_of([_strategy(member) for member in types])
        case mi.NoneType():
            return st.none()
        case mi.BoolType():
            return st.booleans()
        case mi.IntType(ge=ge, gt=gt, le=le, lt=lt):
            low = ge if ge is not None else (gt + 1 if gt is not None else _INT_MIN)
            high = le if le is not None else (lt - 1 if lt is not None else _INT_MAX)
            return st.integers(min_value=low, max_value=high)
        case mi.FloatType(ge=ge, gt=gt, le=le, lt=lt):
            return st.floats(
                min_value=ge if ge is not None else gt,
                max_value=le if le is not None else lt,
                exclude_min=gt is not None,
                exclude_max=lt is not None,
                allow_nan=False,
                allow_infinity=False,
            )
        case mi.StrType(min_length=min_length, max_length=max_length, pattern=pattern):
            low, high = min_length or 0, max_length if max_length is not None else 40
            if pattern is None:
                return st.text(min_size=low, max_size=min(high, 40))
            return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
        case mi.UUIDType():
            return st.uuids()
        case mi.DateTimeType(tz=tz):
            return st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.sampled_from(_OFFSETS) if tz else st.none(),
            )
        case mi.EnumType(cls=cls):
            return st.sampled_from(list(cls))
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.ListType(item_type=item, min_length=min_length, max_length=max_length):
            return st.lists(_strategy(item), min_size=min_length or 0, max_size=max_length or 3)
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(_strategy(key), _strategy(value), max_size=3)
    raise TypeError(f"no strategy for {info!r}; teach tests/contract/strategies.py about it")
