"""The scheduler's handlers, wired by its composition root, on the in-memory broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from faststream.rabbit import RabbitQueue

from shipwreck_contracts import NodeHeartbeat, NodeRegistered, NodeReturned, tag_of
from shipwreck_messaging import create_broker, events_exchange
from shipwreck_messaging.testing import deliver, in_memory
from shipwreck_scheduler.app import create_app
from shipwreck_scheduler.nodes import NodeTable
from shipwreck_scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.anyio


async def test_registrations_and_heartbeats_reach_the_node_table() -> None:
    broker = create_broker("amqp://unused/", app_id="test")
    table = NodeTable()
    create_app(SchedulerSettings(), broker=broker, table=table)
    node_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with in_memory(broker):
        await deliver(
            broker,
            NodeRegistered(
                node_id=node_id,
                hostname="n1",
                cpu_count=4,
                mem_total_mb=8192,
                started_at=now,
            ),
        )
        await deliver(
            broker,
            NodeHeartbeat(
                node_id=node_id,
                hostname="n1",
                cpu_count=4,
                mem_total_mb=8192,
                mem_free_mb=4096,
                load_avg=1.5,
                at=now,
            ),
        )
    view = table.nodes[node_id]
    assert (view.hostname, view.mem_free_mb, view.load_avg) == ("n1", 4096, 1.5)


async def test_a_lost_node_heard_from_again_is_announced_to_the_orchestrator() -> None:
    broker = create_broker("amqp://unused/", app_id="test")
    table = NodeTable()
    create_app(SchedulerSettings(), broker=broker, table=table)
    seen: list[NodeReturned] = []

    @broker.subscriber(
        RabbitQueue("test.returned", routing_key=tag_of(NodeReturned)), events_exchange()
    )
    async def collect(msg: NodeReturned) -> None:
        seen.append(msg)

    node_id = uuid.uuid4()
    then = datetime.now(UTC) - timedelta(minutes=5)

    def beat(at: datetime) -> NodeHeartbeat:
        return NodeHeartbeat(
            node_id=node_id,
            hostname="n1",
            cpu_count=4,
            mem_total_mb=8192,
            mem_free_mb=4096,
            load_avg=0.1,
            at=at,
        )

    async with in_memory(broker):
        await deliver(broker, beat(then))
        table.newly_lost(datetime.now(UTC), timedelta(seconds=10))
        await deliver(broker, beat(datetime.now(UTC)))
        await deliver(broker, beat(datetime.now(UTC)))
    assert [(m.node_id, m.hostname, m.silent_since) for m in seen] == [(node_id, "n1", then)]
