"""The api's composition root: Litestar serving GraphQL, fed by an exclusive update queue."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitQueue
from litestar import Litestar, get
from strawberry.litestar import make_graphql_controller
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from shipwreck_api.auth import bearer_guard, resolve_token
from shipwreck_api.readmodel import NodesView
from shipwreck_api.schema import schema
from shipwreck_api.settings import ApiSettings
from shipwreck_contracts import NodeHeartbeat, tag_of
from shipwreck_messaging import create_broker, declare_topology, events_exchange
from shipwreck_messaging.routes import TOPOLOGY


def create_app(
    settings: ApiSettings,
    *,
    broker: RabbitBroker | None = None,
    nodes: NodesView | None = None,
    logger: logging.Logger | None = None,
) -> Litestar:
    """Wire the api: read model, live update queue, GraphQL behind the bearer guard."""
    log = logger or logging.getLogger("shipwreck.api")
    broker = broker or create_broker(settings.amqp_url, app_id="api")
    view = nodes if nodes is not None else NodesView()
    token, token_source = resolve_token(settings.api_token, settings.state_dir)

    # One exclusive queue per api process: every process sees every update, and the queue
    # disappears with the process (DESIGN section 8).
    updates = RabbitQueue(
        f"api.updates.{uuid.uuid4().hex[:12]}",
        exclusive=True,
        auto_delete=True,
        routing_key=tag_of(NodeHeartbeat),
    )

    @broker.subscriber(updates, events_exchange())
    async def on_heartbeat(msg: NodeHeartbeat) -> None:
        view.apply(msg)

    async def context_getter() -> dict[str, Any]:
        return {"nodes": view}

    graphql = make_graphql_controller(
        schema,
        path="/graphql",
        context_getter=context_getter,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        keep_alive=True,
        graphql_ide=None,
    )

    class GraphQL(graphql):  # type: ignore[misc, valid-type]
        guards = [bearer_guard(token)]

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def start() -> None:
        await broker.start()
        await declare_topology(broker, TOPOLOGY)
        log.info(
            "api ready: http://%s:%d/graphql (token from %s)",
            settings.api_host,
            settings.api_port,
            token_source,
        )

    async def stop() -> None:
        await broker.stop()
        log.info("api stopped")

    return Litestar(
        route_handlers=[GraphQL, healthz],
        on_startup=[start],
        on_shutdown=[stop],
        # Keep the one log format configure_logging set up.
        logging_config=None,
    )
