"""The base of every integration message.

Messages are frozen, keyword-only msgspec Structs. Each concrete message carries a tag
``<context>.<name>.v<N>`` in the ``type`` field of its JSON form; the same tag is the
RabbitMQ routing key it travels under. A message evolves only by adding fields with
defaults; a breaking change gets a new tag (and a new class).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base class of all integration messages (commands and events)."""

    # Concrete subclasses pass ``tag="context.name.vN", frozen=True, kw_only=True`` in their
    # class statement: msgspec applies kw_only only to the fields a class itself defines, and
    # type checkers treat a subclass without frozen=True as mutable.
    __abstract__: ClassVar[bool] = True


def tag_of(message: Message | type[Message]) -> str:
    """Return the tag (and routing key) of a message instance or class."""
    cls = message if isinstance(message, type) else type(message)
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__qualname__} has no string tag; give it tag='context.name.vN'")
    return tag


def encode(message: Message) -> bytes:
    """Encode a message to JSON bytes (its tag included)."""
    return msgspec.json.encode(message)


def decode(data: bytes | str, into: Any) -> Any:
    """Decode JSON into ``into`` (a Message class or a Union of them)."""
    return msgspec.json.decode(data, type=into)
