"""A small domain used to exercise the event-store machinery (not Shipwreck's own model)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate, event

from shipwreck_contracts.base import Message
from shipwreck_eventstore import ShipwreckApplication


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Label(msgspec.Struct, frozen=True):
    text: str
    weight: int = 1


class Ledger(Aggregate):
    """Counts entries; every event carries typed values the mapper must restore."""

    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"ledger/{name}")

    @event("Opened")
    def __init__(self, name: str, owner: uuid.UUID, opened_at: datetime, colour: Colour) -> None:
        self.name = name
        self.owner = owner
        self.opened_at = opened_at
        self.colour = colour
        self.entries: list[tuple[str, Label]] = []

    @event("EntryAdded")
    def add_entry(self, key: str, label: Label) -> None:
        self.entries.append((key, label))

    class Renamed(Aggregate.Event):
        """Version 2 added ``reason``; version 1 events are upcast with a default."""

        class_version = 2
        new_name: str
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason"] = "unknown (recorded before reasons existed)"

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Ledger)
            aggregate.name = self.new_name

    def rename(self, new_name: str, reason: str) -> None:
        self.trigger_event(self.Renamed, new_name=new_name, reason=reason)


class EntryAnnounced(Message, tag="test.entry-announced.v1", frozen=True, kw_only=True):
    """The integration message the sample writer publishes for each entry."""

    ledger_id: uuid.UUID
    key: str


class Tally(Aggregate):
    """The consumer side: counts each announced entry once."""

    @staticmethod
    def create_id(ledger_id: uuid.UUID) -> uuid.UUID:
        return uuid.uuid5(ledger_id, "tally")

    @event("Started")
    def __init__(self, ledger_id: uuid.UUID) -> None:
        self.ledger_id = ledger_id
        self.keys: list[str] = []

    @event("Counted")
    def count(self, key: str) -> None:
        self.keys.append(key)


def translate(domain_event: Any) -> Message | None:
    if isinstance(domain_event, Ledger.EntryAdded):
        return EntryAnnounced(ledger_id=domain_event.originator_id, key=domain_event.key)
    return None


def make_writer(store: Any, name: str) -> ShipwreckApplication:
    """A writer application with a per-test name (it names the tables)."""
    cls = type("SampleWriter", (ShipwreckApplication,), {"name": name})
    app: ShipwreckApplication = cls(store)
    return app
