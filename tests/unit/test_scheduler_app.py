"""The scheduler's handlers, wired by its composition root, on the in-memory broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipwreck_contracts import NodeHeartbeat, NodeLost, NodeRegistered, NodeReturned
from shipwreck_eventstore import StoreConfig
from shipwreck_messaging import create_broker
from shipwreck_messaging.testing import deliver, in_memory
from shipwreck_scheduler.app import create_app
from shipwreck_scheduler.nodes import NodeTable
from shipwreck_scheduler.registry import NodeRegistry, Scheduler, translate
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


async def test_a_lost_node_heard_from_again_is_recorded_and_announced_once() -> None:
    broker = create_broker("amqp://unused/", app_id="test")
    table = NodeTable()
    registry = NodeRegistry(Scheduler(StoreConfig(state_dir=":memory:")))
    create_app(SchedulerSettings(), broker=broker, table=table, registry=registry)
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
        # What the liveness loop does with a silent node: record, then mark.
        assert registry.lost(table.nodes[node_id], then, [])
        table.mark_lost(node_id)
        await deliver(broker, beat(datetime.now(UTC)))
        await deliver(broker, beat(datetime.now(UTC)))
    # The relay announces what was recorded: the loss and one return.
    announced = [m for e in registry.app.events.get(node_id) for m in translate(e)]
    assert [type(m) for m in announced] == [NodeLost, NodeReturned]
    returned = announced[1]
    assert isinstance(returned, NodeReturned)
    assert (returned.node_id, returned.hostname, returned.silent_since) == (node_id, "n1", then)
    assert node_id not in table.lost


def test_the_registry_outlives_a_restart_of_the_scheduler(tmp_path: Path) -> None:
    store = StoreConfig(state_dir=str(tmp_path))
    first = NodeRegistry(Scheduler(store))
    a, b = uuid.uuid4(), uuid.uuid4()
    assert first.heard(a, "a", 2, 4096)
    assert first.heard(b, "b", 4, 8192)
    assert not first.heard(a, "a", 2, 4096)  # nothing new: nothing recorded
    assert first.heard(a, "a", 4, 4096)  # a bigger machine under the same name
    view = NodeTable()
    view.heartbeat(
        NodeHeartbeat(
            node_id=b,
            hostname="b",
            cpu_count=4,
            mem_total_mb=8192,
            mem_free_mb=1,
            load_avg=0,
            at=datetime.now(UTC),
        )
    )
    assert first.lost(view.nodes[b], datetime.now(UTC), [])
    first.app.close()
    again = NodeRegistry(Scheduler(store))
    known = {n.node_id: n for n in again.known()}
    assert set(known) == {a, b}
    assert (known[a].cpu_count, known[a].lost, known[b].lost) == (4, False, True)
