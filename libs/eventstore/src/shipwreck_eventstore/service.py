"""The shell of a service that writes an event store: its relay runs and its store closes
with the process."""

from __future__ import annotations

import logging

import anyio
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_eventstore.config import redact
from shipwreck_eventstore.relay import OutboxRelay
from shipwreck_messaging.service import build_service
from shipwreck_runtime import BackgroundTasks


def build_writer_service(
    name: str,
    broker: RabbitBroker,
    logger: logging.Logger,
    relay: OutboxRelay,
    *,
    tasks: BackgroundTasks | None = None,
) -> FastStream:
    """:func:`build_service` plus the writer's outbox relay, and its store closed on stop."""
    background = tasks or BackgroundTasks()
    background.add("outbox-relay", relay.run)
    app = relay.app

    async def close_store() -> None:
        await anyio.to_thread.run_sync(app.close)

    return build_service(
        name,
        broker,
        logger,
        tasks=background,
        ready_detail=lambda: f"event store {redact(app.store_config.database_url)}",
        on_stop=close_store,
    )
