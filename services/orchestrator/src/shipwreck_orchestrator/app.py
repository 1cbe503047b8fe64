"""The orchestrator's composition root."""

from __future__ import annotations

import asyncio
import logging

import anyio
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_eventstore import WRITER_AGGREGATE_CACHE, OutboxRelay, StoreConfig
from shipwreck_eventstore.service import build_writer_service
from shipwreck_messaging import create_broker
from shipwreck_orchestrator.consumers import register
from shipwreck_orchestrator.service import Orchestrator, OrchestratorService
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_orchestrator.translate import translate
from shipwreck_runtime import BackgroundTasks


def create_app(
    settings: OrchestratorSettings,
    *,
    broker: RabbitBroker | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the orchestrator: store, service, handlers, outbox relay, timeout sweeper."""
    log = logger or logging.getLogger("shipwreck.orchestrator")
    broker = broker or create_broker(settings.amqp_url, app_id="orchestrator")
    # This process is the one writer of its store: its aggregates can stay cached.
    store = StoreConfig(
        database_url=settings.database_url,
        state_dir=settings.state_dir,
        aggregate_cache=WRITER_AGGREGATE_CACHE,
    )
    app = Orchestrator(store)
    service = OrchestratorService(app, settings)
    relay = OutboxRelay(app, broker, translate)
    register(broker, service, relay)

    async def sweep_forever() -> None:
        recovered = await anyio.to_thread.run_sync(service.recover_in_progress)
        log.info("%d deployments in progress at start-up", recovered)
        while True:
            for deployment_id in await anyio.to_thread.run_sync(service.sweep):
                log.warning("deployment %s timed out", deployment_id)
            await asyncio.sleep(settings.sweep_interval_seconds)

    tasks = BackgroundTasks()
    tasks.add("stage-timeouts", sweep_forever)
    return build_writer_service("orchestrator", broker, log, relay, tasks=tasks)
