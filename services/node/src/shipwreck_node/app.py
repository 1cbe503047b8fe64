"""The node's composition root."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import anyio.to_thread
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import NodeHeartbeat, NodeRegistered, NodeWork
from shipwreck_contracts.base import Message
from shipwreck_contracts.gitpolicy import Resolver, resolve_host
from shipwreck_messaging import create_broker, events_exchange, node_work_route, publish
from shipwreck_messaging.service import build_service
from shipwreck_node.dockerruntime import DockerRuntime
from shipwreck_node.gitcli import GitCli
from shipwreck_node.metrics import Capacity, read_capacity
from shipwreck_node.pipeline import Pipeline
from shipwreck_node.ports import ContainerRuntime, GitRemote, HealthProbe, Router
from shipwreck_node.probe import NetworkProbe
from shipwreck_node.proxy import CaddyProxy, CaddyRouter
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from shipwreck_node.work import WorkRunner
from shipwreck_runtime import BackgroundTasks

Running = Callable[[], Awaitable[Sequence[uuid.UUID]]]

PROXY_CHECK_SECONDS: Final = 1.0
"""How often the node looks whether the Caddy and the unbound it supervises (started or
adopted) still run, besides being told by the kernel when one exits."""

PROXY_REVIVE_SPACING: Final = 0.05
"""The least time between two revivals told by the kernel: a helper that exits again at
once does not keep the node busy."""


async def _nothing_running() -> Sequence[uuid.UUID]:
    return []


class NewestListing:
    """The node's deployments as the newest listing that has answered gave them.

    A listing asks the Docker engine, which can take many seconds while it builds and
    starts containers for a queue of deployments. A heartbeat that waited for it was late,
    and a node busy deploying was declared lost (then its deployments were placed
    elsewhere and it was told to abandon them). So a heartbeat waits for the listing at
    most ``patience`` seconds, then goes with the newest list that did answer; the
    scheduler adds what it has assigned to the node anyway. One listing at a time: a slow
    one is waited for again, not abandoned and asked again.
    """

    def __init__(self, running: Running) -> None:
        self._running = running
        self._pending: asyncio.Task[Sequence[uuid.UUID]] | None = None
        self._newest: Sequence[uuid.UUID] = ()
        self._listed_at: float | None = None

    async def within(self, patience: float) -> Sequence[uuid.UUID]:
        """The deployments listed now if the listing answers within ``patience`` seconds,
        else the newest list (empty before the first answer)."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._running())
        done, _ = await asyncio.wait([self._pending], timeout=patience)
        if done:
            task, self._pending = self._pending, None
            self._newest = task.result()
            self._listed_at = asyncio.get_running_loop().time()
        return self._newest

    def age(self) -> float | None:
        """Seconds since the newest listing answered; None before the first answer."""
        if self._listed_at is None:
            return None
        return asyncio.get_running_loop().time() - self._listed_at

    def close(self) -> None:
        """Cancel a listing still in progress."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class Heartbeat:
    """Announces the node once, then reports its capacity and its deployments every interval."""

    def __init__(
        self,
        settings: NodeSettings,
        broker: RabbitBroker,
        capacity: Callable[[], Capacity] = read_capacity,
        running: Running = _nothing_running,
        logger: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.capacity = capacity
        self.running = running
        self.log = logger or logging.getLogger("shipwreck.node")
        self.started_at = datetime.now(UTC)

    def registration(self) -> NodeRegistered:
        """The message that announces this node."""
        now = self.capacity()
        return NodeRegistered(
            node_id=self.settings.node_id,
            hostname=self.settings.name,
            cpu_count=now.cpu_count,
            mem_total_mb=now.mem_total_mb,
            started_at=self.started_at,
        )

    def beat(self, running: Sequence[uuid.UUID] = ()) -> NodeHeartbeat:
        """The message that says this node is alive, with its load and its deployments."""
        now = self.capacity()
        return NodeHeartbeat(
            node_id=self.settings.node_id,
            hostname=self.settings.name,
            cpu_count=now.cpu_count,
            mem_total_mb=now.mem_total_mb,
            mem_free_mb=now.mem_free_mb,
            load_avg=now.load_avg,
            running=list(running),
            at=datetime.now(UTC),
        )

    async def run(self) -> None:
        """Register, then heartbeat every interval until cancelled, however slow the
        listing of the node's deployments is."""
        await publish(self.broker, self.registration())
        listing = NewestListing(self.running)
        interval = self.settings.heartbeat_seconds
        try:
            while True:
                running = await listing.within(interval)
                age = listing.age()
                if age is None or age > interval:
                    self.log.warning(
                        "listing this node's containers took over %.1f s (is the Docker "
                        "engine overloaded?): this heartbeat carries %s",
                        interval,
                        "no list yet" if age is None else f"the list of {age:.1f} s ago",
                    )
                await publish(self.broker, self.beat(running))
                await asyncio.sleep(interval)
        finally:
            listing.close()


def create_app(
    settings: NodeSettings,
    *,
    broker: RabbitBroker | None = None,
    logger: logging.Logger | None = None,
    git: GitRemote | None = None,
    runtime: ContainerRuntime | None = None,
    probe: HealthProbe | None = None,
    router: Router | None = None,
    resolve: Resolver = resolve_host,
) -> FastStream:
    """Wire the node: its work queue, the deployment pipeline, its proxy, its heartbeat.

    ``git``, ``runtime``, ``probe`` and ``router`` default to the real git CLI, Docker
    Engine, network and Caddy; ``resolve`` is the DNS look-up the Git URL policy uses.
    """
    log = logger or logging.getLogger("shipwreck.node")
    broker = broker or create_broker(settings.amqp_url, app_id=f"node.{settings.name}")
    runtime = runtime or DockerRuntime.from_env()
    probe = probe or NetworkProbe()
    router = router or CaddyRouter(
        CaddyProxy(
            admin=settings.proxy_admin,
            http_port=settings.proxy_http_port,
            https_port=settings.proxy_https_port,
            state_dir=settings.proxy_dir,
            caddy_binary=settings.caddy_binary,
            migrate_connections=settings.proxy_migrate_connections,
            dns_port=settings.proxy_dns_port,
            unbound_binary=settings.unbound_binary,
        )
    )
    routes = Routes(settings, runtime, router, probe)

    async def send(message: Message) -> None:
        await publish(broker, message)

    pipeline = Pipeline(
        settings,
        git=git or GitCli(timeout=settings.clone_timeout_seconds),
        runtime=runtime,
        probe=probe,
        routes=routes,
        send=send,
        resolve=resolve,
    )
    runner = WorkRunner(settings, pipeline, runtime, send, routes=routes, logger=log)

    # The subscriber declares the node's own queue (bound to work.<node id>) at start-up,
    # so work sent while the node restarts waits for it.
    work_queue = broker.subscriber(
        node_work_route(str(settings.node_id)).declaration(), events_exchange()
    )

    @work_queue
    async def on_work(work: NodeWork) -> None:
        await runner.handle(work)

    async def stop() -> None:
        # Work in progress first: each cancelled deployment hands its route back.
        await runner.close()
        await router.close()

    tasks = BackgroundTasks()
    tasks.add("heartbeat", Heartbeat(settings, broker, running=runner.running, logger=log).run)

    async def watch_proxy() -> None:
        # Apps are reached only through Caddy, and Caddy finds them only through unbound:
        # one that exits is started again at once (a failure here is retried with back-off).
        # The kernel tells of an exit as it happens (each request Caddy cannot route fails
        # meanwhile); the look every PROXY_CHECK_SECONDS is for a kernel that cannot.
        while True:
            exited = await routes.proxy_exited(within=PROXY_CHECK_SECONDS)
            await routes.revive()
            if exited:
                await asyncio.sleep(PROXY_REVIVE_SPACING)

    tasks.add("proxy", watch_proxy)
    app = build_service(
        "node",
        broker,
        log,
        tasks=tasks,
        ready_detail=lambda: (
            f"node {settings.name} ({settings.node_id}), apps at {routes.url('<app>')}"
        ),
        on_stop=stop,
    )

    @app.on_startup
    async def _recover() -> None:
        # Before the first work message: leftovers of a previous run go first, and the
        # apps still running here are routed again (Caddy may have restarted with us).
        await anyio.to_thread.run_sync(shutil.rmtree, settings.node_work_dir, True)
        await router.start()
        await runner.recover()

    return app
