"""The watcher's composition root."""

from __future__ import annotations

import logging

import anyio
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_eventstore import ShipwreckApplication, StoreConfig, redact
from shipwreck_messaging import create_broker
from shipwreck_messaging.service import build_service
from shipwreck_watcher.settings import WatcherSettings


class Watcher(ShipwreckApplication):
    """The sole writer of WatchedRepo aggregates: the trigger ledger."""

    name = "watcher"


def create_app(
    settings: WatcherSettings,
    *,
    broker: RabbitBroker | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the watcher: its event store and its broker."""
    log = logger or logging.getLogger("shipwreck.watcher")
    broker = broker or create_broker(settings.amqp_url, app_id="watcher")
    store = StoreConfig(database_url=settings.database_url, state_dir=settings.state_dir)
    # Opened here, not at import: the composition root is the one place that does I/O setup.
    app = Watcher(store)

    async def close_store() -> None:
        await anyio.to_thread.run_sync(app.close)

    return build_service(
        "watcher",
        broker,
        log,
        ready_detail=lambda: f"event store {redact(settings.database_url)}",
        on_stop=close_store,
    )
