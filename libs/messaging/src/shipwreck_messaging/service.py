"""The shell every Shipwreck service process runs in: broker, topology, background loops."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_messaging.broker import declare_topology
from shipwreck_messaging.routes import TOPOLOGY
from shipwreck_messaging.topology import Topology
from shipwreck_runtime import BackgroundTasks, freeze_startup_heap
from shipwreck_runtime.secrets import redact_url


def build_service(
    name: str,
    broker: RabbitBroker,
    logger: logging.Logger,
    *,
    tasks: BackgroundTasks | None = None,
    topology: Topology = TOPOLOGY,
    ready_detail: Callable[[], str] = lambda: "",
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> FastStream:
    """A FastStream app that declares the topology, runs ``tasks``, and says when ready.

    SIGINT and SIGTERM stop it: subscribers stop taking messages, in-flight handlers finish
    (up to the broker's graceful timeout), background loops are cancelled, then ``on_stop``.
    """
    background = tasks or BackgroundTasks()
    app = FastStream(broker, logger=logger)

    @app.after_startup
    async def _ready() -> None:
        await declare_topology(broker, topology)
        await background.start()
        detail = ready_detail()
        logger.info("%s ready%s", name, f": {detail}" if detail else "")

    @app.on_shutdown
    async def _stop() -> None:
        await background.stop()
        if on_stop is not None:
            await on_stop()
        logger.info("%s stopped", name)

    return app


def run_service(app: FastStream, name: str, amqp_url: str, logger: logging.Logger) -> int:
    """Run ``app`` until SIGINT/SIGTERM; explain an unreachable RabbitMQ instead of a trace."""
    import asyncio

    from aiormq.exceptions import AMQPConnectionError

    freeze_startup_heap(logger)
    try:
        asyncio.run(app.run())
    except (AMQPConnectionError, ConnectionError, OSError) as e:
        logger.error(
            "%s cannot reach RabbitMQ at %s (%s). Start it with `rabbitmq-server -detached`, "
            "or point SHIPWRECK_AMQP_URL at a running broker.",
            name,
            redact_url(amqp_url),
            e,
        )
        return 2
    return 0
