"""The api's composition root: Litestar serving GraphQL, fed by an exclusive update queue.

Start-up order matters for the rebuild (invariant 2, the api reads no other service's
tables): the exclusive queue is declared, bound and consumed first, and only then are the
orchestrator and the watcher (whose log holds the trigger ledger) asked to replay their
logs into it. Live events and the replay then arrive
together, in any order and possibly twice; the read model folds by log position, so the
result is the same as if they had arrived once, in order. When the queue's connection
drops, the queue goes with it: once reconnected, the api asks for a replay again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError
from faststream.rabbit import RabbitBroker
from litestar import Litestar, Request, Response, get, post
from litestar.enums import ScopeType
from litestar.params import FromPath
from litestar.types import Scope
from strawberry.litestar import make_graphql_controller
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from shipwreck_api.auth import ADMIN, actor_of, bearer_guard, resolve_token
from shipwreck_api.commands import Actions, CommandBus, RabbitCommandBus
from shipwreck_api.direct import FrameTransportWSHandler, socket_of
from shipwreck_api.fanout import encode_frame
from shipwreck_api.live import LIVE_TAGS, Live
from shipwreck_api.ordering import InOrder
from shipwreck_api.readmodel import ReadModel
from shipwreck_api.schema import ApiContext, schema
from shipwreck_api.settings import ApiSettings
from shipwreck_api.webhooks import Ignored, WebhookError, parse_push
from shipwreck_contracts import (
    ORCHESTRATOR_ORIGIN,
    WATCHER_ORIGIN,
    ReplayRequested,
    WebhookReceived,
)
from shipwreck_contracts.gitpolicy import Resolver, resolve_host
from shipwreck_messaging import (
    EXCHANGE,
    PublishFailed,
    create_broker,
    declare_topology,
    publish,
)
from shipwreck_messaging.routes import TOPOLOGY
from shipwreck_runtime import BackgroundTasks

# The update queue's handler does no I/O, so many deliveries may be in flight at once: a
# replay of a long log is not paced by round trips.
UPDATE_PREFETCH = 256


class UpdateFeed:
    """The api's exclusive update queue, consumed with aio-pika itself.

    This queue is the api's hot path: every log line, heartbeat and event, and the whole
    orchestrator log on a rebuild. Through FastStream's subscriber pipeline (middlewares,
    dependency injection, an injected message resolved in a worker thread) a message cost
    the api 650 µs of CPU here, taken raw 420 µs, of which its own handling is 12 µs. So the
    feed takes raw deliveries and decodes them with the contracts' decoder; commands and
    the topology still go through the FastStream broker.
    """

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        on_message: Callable[[AbstractIncomingMessage], Awaitable[None]],
        *,
        on_reconnect: Callable[[], None] | None = None,
        prefetch: int = UPDATE_PREFETCH,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        # aio-pika's robust connection holds its channels only weakly: a channel that
        # nothing else holds is collected while the connection is down, and is then not
        # restored (no queue, no bindings, no consumer after a reconnection).
        self._channel: AbstractRobustChannel | None = None

    async def start(self) -> None:
        """Declare the queue on a connection of its own, bind every live tag, consume."""
        self._connection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": f"api {self.queue}"}
        )
        # aio-pika declares, binds and consumes again after a reconnection; what was
        # published meanwhile went to a queue that no longer existed.
        self._connection.reconnect_callbacks.add(self._reconnected)
        channel = self._channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        # Exclusive to this connection: it disappears with the process.
        queue = await channel.declare_queue(self.queue, exclusive=True, auto_delete=True)
        for tag in LIVE_TAGS:
            await queue.bind(exchange, routing_key=tag)
        await queue.consume(self.on_message)

    def _reconnected(self, _connection: object) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect()

    async def stop(self) -> None:
        """Close the connection (and with it the queue)."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._channel = None


def create_app(
    settings: ApiSettings,
    *,
    broker: RabbitBroker | None = None,
    live: Live | None = None,
    bus: CommandBus | None = None,
    resolver: Resolver = resolve_host,
    logger: logging.Logger | None = None,
) -> Litestar:
    """Wire the api: read model, live update queue, replay request, GraphQL behind the guard."""
    log = logger or logging.getLogger("shipwreck.api")
    broker = broker or create_broker(settings.amqp_url, app_id="api")
    live = live or Live(
        ReadModel(
            log_lines=settings.log_buffer_lines,
            log_deployments=settings.log_buffer_deployments,
            ledger_entries=settings.ledger_entries,
        ),
        queue_size=settings.subscriber_queue_size,
        log_queue_size=settings.log_subscriber_queue_size,
        unknown_wait=settings.unknown_deployment_wait_seconds,
        read_wait=settings.read_model_wait_seconds,
    )

    # One exclusive queue per api process: every process sees every update, and the queue
    # disappears with the process (DESIGN section 8). It is also where the replay is sent.
    updates = f"api.updates.{uuid.uuid4().hex[:12]}"

    origins = (ORCHESTRATOR_ORIGIN, WATCHER_ORIGIN)

    async def ask_for_replay(origin: str) -> None:
        """Publish one replay request to ``origin``; its answer comes to this process's queue."""
        now = datetime.now(UTC)
        live.replay_requesting(now, origin)
        # Mandatory: if no queue takes the request (the writer's topology is not declared
        # yet), that is an error rather than a wait for an answer that never comes.
        await publish(
            broker,
            ReplayRequested(origin=origin, reply_to=updates, after_position=0, requested_at=now),
            mandatory=True,
        )
        live.replay_requested(origin)

    async def ask_for_replays() -> None:
        """Ask every writer whose log this read model folds for a replay."""
        for origin in origins:
            await ask_for_replay(origin)

    actions = Actions(
        live,
        bus or RabbitCommandBus(broker),
        allow_private=settings.git_allow_private,
        resolve=resolver,
        request_replay=ask_for_replays,
        rebuild_timeout=settings.rebuild_timeout_seconds,
    )
    token, token_source = resolve_token(settings.api_token, settings.state_dir)

    # Many deliveries in flight (the prefetch), applied in the queue's order.
    in_order = InOrder(live.receive_raw)

    async def on_update(message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag
        if tag is None:
            live.receive_raw(message.body, message.headers)
        else:
            in_order.deliver(tag, message.body, message.headers)
        # Acked after handling (which never raises): a requeued message would come back
        # forever, this queue has no delivery limit.
        await message.ack()

    def replay_again() -> None:
        # The exclusive queue was gone while the connection was: events published then
        # are missing. The read model folds a replay over what it has without harm.
        log.warning("update queue reconnected: asking for a replay of what was missed")
        task = asyncio.get_running_loop().create_task(request_replay())
        replays.add(task)
        task.add_done_callback(replays.discard)

    replays: set[asyncio.Task[None]] = set()

    feed = UpdateFeed(settings.amqp_url, updates, on_update, on_reconnect=replay_again)

    async def context_getter(scope: Scope) -> dict[str, Any]:
        context = ApiContext(
            live=live,
            actions=actions,
            actor=actor_of(scope),
            # Served by direct.FrameWebSocketProtocol: updates go straight to the socket.
            socket=socket_of(scope) if scope["type"] == ScopeType.WEBSOCKET else None,
        )
        return {"api": context}

    graphql = make_graphql_controller(
        schema,
        path="/graphql",
        context_getter=context_getter,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        keep_alive=True,
        graphql_ide=None,
    )

    class GraphQL(graphql):  # type: ignore[misc, valid-type]
        guards = [bearer_guard({token: ADMIN})]
        graphql_transport_ws_handler_class = FrameTransportWSHandler

        def encode_json(self, data: object) -> str | bytes:
            # A subscription update shared by many subscribers is encoded once (fanout).
            if isinstance(data, dict):
                frame = encode_frame(data)
                if frame is not None:
                    return frame
            encoded: str | bytes = super().encode_json(data)
            return encoded

    @get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "readModel": live.replay.as_json(),
            "ledger": live.ledger_replay.as_json(),
        }

    async def request_replay() -> None:
        for origin in origins:
            while True:
                try:
                    await ask_for_replay(origin)
                except (PublishFailed, AMQPError, ConnectionError, OSError) as e:
                    # Not routed (no queue yet), or RabbitMQ away: the rebuild waits for it.
                    log.warning(
                        "read model rebuilding: replay request to %s not delivered (%s); "
                        "retrying in %.0fs",
                        origin,
                        e,
                        settings.replay_retry_seconds,
                    )
                    await asyncio.sleep(settings.replay_retry_seconds)
                    continue
                log.info("read model rebuilding: asked %s to replay its log", origin)
                break

    @post("/webhooks/{provider:str}", status_code=202)
    async def webhook(
        provider: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[dict[str, str]]:
        """A push from GitHub, Gitea or GitLab: verified here, judged by the watcher's ledger.

        No bearer token: the webhook secret (``SHIPWRECK_WEBHOOK_SECRET``) authenticates it.
        A bad signature is answered 401 and still reported, so the ledger records it.
        """
        if not settings.webhook_secret:
            return Response(
                {"error": "webhooks are disabled: set SHIPWRECK_WEBHOOK_SECRET"}, status_code=503
            )
        body = await request.body()
        try:
            push = parse_push(provider, dict(request.headers), body, settings.webhook_secret)
        except Ignored as e:
            return Response({"status": f"ignored: {e} event"}, status_code=200)
        except WebhookError as e:
            return Response({"error": str(e)}, status_code=e.status)
        await publish(
            broker,
            WebhookReceived(
                delivery_id=push.delivery_id,
                provider=push.provider,
                repo_url=push.repo_url,
                ref=push.ref,
                commit=push.commit,
                verified=push.verified,
                received_at=datetime.now(UTC),
                repo_urls=push.repo_urls,
                rejection=push.rejection,
            ),
            mandatory=True,
        )
        if not push.verified:
            return Response({"error": push.rejection or "bad signature"}, status_code=401)
        return Response({"status": "accepted", "delivery": push.delivery_id}, status_code=202)

    background = BackgroundTasks()
    background.add("replay-request", request_replay)

    async def start() -> None:
        await broker.start()
        await declare_topology(broker, TOPOLOGY)
        await feed.start()
        await background.start()
        # "api ready" comes from the server once its socket listens (see __main__): this
        # startup runs before uvicorn binds it.
        log.info("api started: broker, live feed and replays (token from %s)", token_source)

    async def stop() -> None:
        await background.stop()
        for task in list(replays):
            task.cancel()
        await feed.stop()
        await broker.stop()
        log.info("api stopped")

    return Litestar(
        route_handlers=[GraphQL, healthz, webhook],
        on_startup=[start],
        on_shutdown=[stop],
        # Keep the one log format configure_logging set up.
        logging_config=None,
    )
