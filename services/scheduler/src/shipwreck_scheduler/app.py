"""The scheduler's composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import anyio.to_thread
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import (
    DeploymentCancelled,
    DeploymentErrored,
    DeploymentRunning,
    DeploymentStopped,
    DeploymentSuperseded,
    NodeHeartbeat,
    NodeRegistered,
    PlacementDecided,
    RequestPlacement,
    SchedulerProbe,
)
from shipwreck_eventstore import OutboxRelay, StoreConfig
from shipwreck_eventstore.service import build_writer_service
from shipwreck_messaging import create_broker, events_exchange, publish, tag_filter
from shipwreck_messaging.publishing import DISCONNECTED
from shipwreck_messaging.routes import SCHEDULER_NODES, SCHEDULER_PLACEMENT
from shipwreck_runtime import BackgroundTasks
from shipwreck_scheduler.nodes import NodeTable, ProbeSchedule
from shipwreck_scheduler.placement import Snapshot, plan
from shipwreck_scheduler.registry import NodeRegistry, Scheduler, translate
from shipwreck_scheduler.settings import SchedulerSettings


class Assignments:
    """Which deployments the scheduler gave each node, until they end."""

    def __init__(self) -> None:
        self.by_node: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)

    def assign(self, node_id: uuid.UUID, deployment_id: uuid.UUID) -> None:
        """Count ``deployment_id`` against ``node_id`` (only there)."""
        self.release(deployment_id)
        self.by_node[node_id].add(deployment_id)

    def release(self, deployment_id: uuid.UUID) -> None:
        """The deployment ended: it no longer loads its node."""
        for deployments in self.by_node.values():
            deployments.discard(deployment_id)

    def counts(self, table: NodeTable) -> dict[uuid.UUID, int]:
        """Deployments per node: those it reports running and those just given to it."""
        return {
            node_id: len(set(view.running) | self.by_node.get(node_id, set()))
            for node_id, view in table.nodes.items()
        }


def create_app(
    settings: SchedulerSettings,
    *,
    broker: RabbitBroker | None = None,
    table: NodeTable | None = None,
    registry: NodeRegistry | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the scheduler: node registry and liveness, placement decisions with scores."""
    log = logger or logging.getLogger("shipwreck.scheduler")
    broker = broker or create_broker(settings.amqp_url, app_id="scheduler")
    registry = registry or NodeRegistry(
        Scheduler(StoreConfig(database_url=settings.database_url, state_dir=settings.state_dir))
    )
    relay = OutboxRelay(registry.app, broker, translate)
    nodes = table if table is not None else NodeTable()
    assignments = Assignments()
    timeout = timedelta(seconds=settings.node_timeout_seconds)
    deaf_after = timedelta(seconds=settings.deaf_after_seconds)
    inbox = broker.subscriber(SCHEDULER_NODES.declaration(), events_exchange())
    placement = broker.subscriber(SCHEDULER_PLACEMENT.declaration(), events_exchange())

    async def remember(node_id: uuid.UUID, hostname: str, cpu_count: int, mem_mb: int) -> None:
        if await anyio.to_thread.run_sync(registry.heard, node_id, hostname, cpu_count, mem_mb):
            log.info("node %s (%s) recorded", hostname, node_id)

    @inbox(filter=tag_filter(NodeRegistered))
    async def on_registered(msg: NodeRegistered) -> None:
        if nodes.register(msg):
            log.info("node %s (%s) registered", msg.hostname, msg.node_id)
        # Recorded on every registration (rare), so changed facts are kept too.
        await remember(msg.node_id, msg.hostname, msg.cpu_count, msg.mem_total_mb)

    @inbox(filter=tag_filter(SchedulerProbe))
    async def on_probe(msg: SchedulerProbe) -> None:
        nodes.heard(datetime.now(UTC), deaf_after)

    @inbox(filter=tag_filter(NodeHeartbeat))
    async def on_heartbeat(msg: NodeHeartbeat) -> None:
        nodes.heard(datetime.now(UTC), deaf_after)
        returned = nodes.returning(msg)
        if returned is not None:
            # Recorded first: the relay announces node.returned, and the table forgets the
            # loss only once the record exists (a failure here is retried by redelivery).
            await anyio.to_thread.run_sync(registry.returned, msg.node_id, returned.silent_since)
            log.warning("node %s (%s) is back after it was lost", msg.hostname, msg.node_id)
        if nodes.heartbeat(msg):
            log.info("node %s (%s) first heard from", msg.hostname, msg.node_id)
            await remember(msg.node_id, msg.hostname, msg.cpu_count, msg.mem_total_mb)

    @placement(filter=tag_filter(RequestPlacement))
    async def on_request(msg: RequestPlacement) -> None:
        # No node to ask right now (the only one restarting, or the scheduler just back from
        # a broker outage and not hearing the nodes yet): wait a while for one, as a
        # deployment waits for a free worker, rather than fail it at once.
        waited = 0.0
        while waited < settings.placement_wait_seconds and (
            nodes.deaf(datetime.now(UTC), deaf_after)
            or not nodes.placeable(datetime.now(UTC), timeout)
        ):
            await asyncio.sleep(0.25)
            waited += 0.25
        # Only nodes that reported their free memory and load can be scored.
        reported = [v for v in nodes.nodes.values() if v.reported]
        snapshot = Snapshot(reported, assignments.counts(nodes))
        decision = plan(snapshot, msg, datetime.now(UTC), timeout)
        if isinstance(decision, PlacementDecided):
            assignments.assign(decision.node_id, msg.deployment_id)
            log.info("deployment %s -> node %s", msg.deployment_id, decision.node_id)
        else:
            log.warning("deployment %s cannot be placed: %s", msg.deployment_id, decision.reason)
        await publish(broker, decision, mandatory=True)

    ended = (DeploymentErrored, DeploymentCancelled, DeploymentStopped, DeploymentSuperseded)
    for cls in ended:

        async def on_ended(msg: DeploymentErrored) -> None:
            assignments.release(msg.deployment_id)

        on_ended.__annotations__["msg"] = cls
        on_ended.__name__ = f"on_{cls.__name__}"
        placement(filter=tag_filter(cls))(on_ended)

    @placement(filter=tag_filter(DeploymentRunning))
    async def on_running(msg: DeploymentRunning) -> None:
        assignments.assign(msg.node_id, msg.deployment_id)

    async def watch_liveness() -> None:
        # Every node recorded before a restart is watched again: one that died meanwhile
        # is declared lost a timeout after the start, though it never heartbeats again.
        known = await anyio.to_thread.run_sync(registry.known)
        restored = nodes.restore(known, datetime.now(UTC))
        log.info("watching %d nodes recorded before this start", restored)
        probes = ProbeSchedule()
        while True:
            now = datetime.now(UTC)
            # Through the broker to its own queue: proof that it can hear the nodes. When
            # it fails no probe comes back, and the table stops declaring losses meanwhile.
            if probes.due(now):
                with contextlib.suppress(*DISCONNECTED):
                    await publish(broker, SchedulerProbe(sent_at=now), patience=0)
            for view in nodes.silent(now, timeout, deaf_after):
                deployments = sorted(
                    set(view.running) | assignments.by_node.get(view.node_id, set())
                )
                assert view.last_seen_at is not None
                # Recorded, then marked: a failed record is tried again on the next round.
                await anyio.to_thread.run_sync(registry.lost, view, view.last_seen_at, deployments)
                nodes.mark_lost(view.node_id)
                log.warning(
                    "node %s (%s) lost: no heartbeat since %s; %d deployments",
                    view.hostname,
                    view.node_id,
                    view.last_seen_at,
                    len(deployments),
                )
                for deployment_id in deployments:
                    assignments.release(deployment_id)
            await asyncio.sleep(settings.liveness_check_seconds)

    tasks = BackgroundTasks()
    tasks.add("node-liveness", watch_liveness)
    return build_writer_service("scheduler", broker, log, relay, tasks=tasks)
