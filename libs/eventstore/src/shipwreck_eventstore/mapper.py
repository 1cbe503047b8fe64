"""A msgspec mapper for eventsourcing that keeps upcasting and restores real types.

eventsourcing's JSON transcoder turns UUIDs and datetimes into strings unless each type has
a registered transcoding, and it knows nothing of msgspec Structs. This mapper encodes the
event's state with msgspec (which knows UUID, datetime, Decimal, enums, Structs and
dataclasses), and decodes in three steps: JSON to a plain dict, the event class's
``upcast_vN_vM`` methods on that dict, then ``msgspec.convert`` into the types the event
class declares. Stored bytes stay plain JSON, readable by any tool.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any, TypeVar

import msgspec
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

# Set by eventsourcing from the stored row, never part of the encoded state.
_ENVELOPE = ("originator_id", "originator_version")


class MsgspecMapper(Mapper[Any]):
    """Maps domain events to stored events and back with msgspec (see module docstring)."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Encode ``domain_event`` (its class version included when above 1)."""
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        data = msgspec.json.encode(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """Decode, upcast, convert to declared types, and rebuild the event object."""
        cls = resolve_topic(stored_event.topic)
        data = stored_event.state
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            state: dict[str, Any] = msgspec.json.decode(data)
            from_version = state.pop("class_version", 1)
            to_version = getattr(cls, "class_version", 1)
            while from_version < to_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
                from_version += 1
            typed = msgspec.structs.asdict(msgspec.convert(state, type=_state_type(cls)))
        except (msgspec.DecodeError, msgspec.ValidationError, AttributeError) as e:
            raise MapperDeserialisationError(
                f"cannot decode stored event {stored_event.topic} "
                f"{stored_event.originator_id} v{stored_event.originator_version}: {e}"
            ) from e
        typed["originator_id"] = stored_event.originator_id
        typed["originator_version"] = stored_event.originator_version
        # Like eventsourcing's own mapper: restore state without re-running __init__ checks.
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", typed)
        return domain_event


@cache
def _state_type(cls: type[Any]) -> type[msgspec.Struct]:
    """A Struct with the event class's fields and declared types (the decoding target)."""
    hints = _type_hints(cls)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        if f.name in _ENVELOPE:
            continue
        hint = hints.get(f.name, Any)
        if isinstance(hint, TypeVar):
            hint = Any
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, hint, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, hint, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, hint))
    # Required fields first: msgspec, like dataclasses, wants defaults last.
    fields.sort(key=lambda spec: len(spec) == 3)
    return msgspec.defstruct(f"{cls.__qualname__}State", fields, forbid_unknown_fields=False)


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        # A forward reference that cannot be resolved: fall back per field, leaving the
        # unresolvable ones untyped rather than failing every read of the stream.
        hints: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name, hint in getattr(klass, "__annotations__", {}).items():
                hints[name] = hint if not isinstance(hint, str) else Any
        return hints
