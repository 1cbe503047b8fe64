"""Shipwreck event store: application base, msgspec mapper, outbox relay, exactly-once effects."""

from shipwreck_eventstore.application import ShipwreckApplication
from shipwreck_eventstore.config import (
    WRITER_AGGREGATE_CACHE,
    StoreConfig,
    StoreConfigError,
    redact,
)
from shipwreck_eventstore.mapper import MsgspecMapper
from shipwreck_eventstore.processing import ConcurrencyConflict, existing, process_once
from shipwreck_eventstore.relay import (
    OutboxRelay,
    Routed,
    Translate,
    relay_position_name,
    tracking_from_headers,
)
from shipwreck_eventstore.tracking import has_exact_tracking

__all__ = [
    "WRITER_AGGREGATE_CACHE",
    "ConcurrencyConflict",
    "MsgspecMapper",
    "OutboxRelay",
    "Routed",
    "ShipwreckApplication",
    "StoreConfig",
    "StoreConfigError",
    "Translate",
    "existing",
    "has_exact_tracking",
    "process_once",
    "redact",
    "relay_position_name",
    "tracking_from_headers",
]
