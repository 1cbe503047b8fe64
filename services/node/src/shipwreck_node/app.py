"""The node's composition root."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import NodeHeartbeat, NodeRegistered
from shipwreck_messaging import create_broker, declare_route, node_work_route, publish
from shipwreck_messaging.service import build_service
from shipwreck_node.metrics import Capacity, read_capacity
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import BackgroundTasks


class Heartbeat:
    """Announces the node once, then reports its capacity every interval."""

    def __init__(
        self,
        settings: NodeSettings,
        broker: RabbitBroker,
        capacity: Callable[[], Capacity] = read_capacity,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.capacity = capacity
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

    def beat(self) -> NodeHeartbeat:
        """The message that says this node is alive, with its current load."""
        now = self.capacity()
        return NodeHeartbeat(
            node_id=self.settings.node_id,
            hostname=self.settings.name,
            cpu_count=now.cpu_count,
            mem_total_mb=now.mem_total_mb,
            mem_free_mb=now.mem_free_mb,
            load_avg=now.load_avg,
            at=datetime.now(UTC),
        )

    async def run(self) -> None:
        """Register, then heartbeat until cancelled."""
        await publish(self.broker, self.registration())
        while True:
            await publish(self.broker, self.beat())
            await asyncio.sleep(self.settings.heartbeat_seconds)


def create_app(
    settings: NodeSettings,
    *,
    broker: RabbitBroker | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the node: its work queue, its heartbeat."""
    log = logger or logging.getLogger("shipwreck.node")
    broker = broker or create_broker(settings.amqp_url, app_id=f"node.{settings.name}")
    heartbeat = Heartbeat(settings, broker)
    tasks = BackgroundTasks()

    async def declare_work_queue() -> None:
        # The work queue exists from the node's first start, so work sent while it
        # restarts waits for it.
        await declare_route(broker, node_work_route(str(settings.node_id)))

    tasks.add("work-queue", declare_work_queue)
    tasks.add("heartbeat", heartbeat.run)
    return build_service(
        "node",
        broker,
        log,
        tasks=tasks,
        ready_detail=lambda: f"node {settings.name} ({settings.node_id})",
    )
