"""Orchestrator and scheduler as real processes on RabbitMQ and PostgreSQL, with fake nodes.

The fake nodes speak the node protocol (heartbeats, work queue, reports) without Docker, so
these tests show the control plane alone: acceptance, placement with scores, spreading by
load, reports folding into statuses, supersession and refusals.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue

from shipwreck_contracts import (
    AnyMessage,
    DeploymentErrored,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentSuperseded,
    DeployWork,
    NodeHeartbeat,
    RequestDeployment,
    Stage,
    StageReported,
    StopWork,
    WorkSucceeded,
)
from shipwreck_messaging import (
    create_broker,
    declare_route,
    events_exchange,
    node_work_route,
    publish,
    tag_filter,
)
from tests.support.platform import Platform

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]
SHA = "c" * 40


class FakeNodes:
    """Nodes that heartbeat and report success for any work, recording what they got."""

    def __init__(self, broker: RabbitBroker, count: int) -> None:
        self.broker = broker
        self.ids = [uuid.uuid4() for _ in range(count)]
        self.work: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        self.stopped: list[uuid.UUID] = []
        for node_id in self.ids:
            self._subscribe(node_id)

    def _subscribe(self, node_id: uuid.UUID) -> None:
        queue = node_work_route(str(node_id)).declaration()
        sub = self.broker.subscriber(queue, events_exchange())

        @sub(filter=tag_filter(DeployWork))
        async def on_work(msg: DeployWork) -> None:
            self.work[node_id].append(msg.deployment_id)
            for stage in (Stage.CLONING, Stage.BUILDING, Stage.STARTING):
                await publish(
                    self.broker,
                    StageReported(
                        deployment_id=msg.deployment_id,
                        node_id=node_id,
                        attempt=msg.attempt,
                        stage=stage,
                        commit=SHA,
                        at=datetime.now(UTC),
                    ),
                )
            await publish(
                self.broker,
                WorkSucceeded(
                    deployment_id=msg.deployment_id,
                    node_id=node_id,
                    attempt=msg.attempt,
                    commit=SHA,
                    image=f"img-{msg.app}",
                    container_id="c",
                    url="http://x/",
                    at=datetime.now(UTC),
                ),
            )

        @sub(filter=tag_filter(StopWork))
        async def on_stop(msg: StopWork) -> None:
            self.stopped.append(msg.deployment_id)

    async def declare(self) -> None:
        for node_id in self.ids:
            await declare_route(self.broker, node_work_route(str(node_id)))

    async def heartbeat(self) -> None:
        for i, node_id in enumerate(self.ids):
            await publish(
                self.broker,
                NodeHeartbeat(
                    node_id=node_id,
                    hostname=f"fake-{i}",
                    cpu_count=2,
                    mem_total_mb=4096,
                    mem_free_mb=3000,
                    load_avg=0.1,
                    at=datetime.now(UTC),
                ),
            )


class Observer:
    """Collects every deployment event the orchestrator publishes."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.events: list[Any] = []
        self.changed = asyncio.Event()
        queue = RabbitQueue(
            f"observer-{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
            routing_key="deployment.#",
        )

        @broker.subscriber(queue, events_exchange())
        async def on_event(msg: AnyMessage) -> None:
            self.events.append(msg)
            self.changed.set()

    def of(self, cls: type[Any], deployment_id: uuid.UUID | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (deployment_id is None or e.deployment_id == deployment_id)
        ]

    async def wait(self, predicate: Any, seconds: float = 30) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), seconds)


def _request(n: int, **kw: Any) -> RequestDeployment:
    return RequestDeployment(
        deployment_id=uuid.uuid4(),
        repo_url=f"git://127.0.0.1:9/app{n}.git",
        actor="test",
        requested_at=datetime.now(UTC),
        **kw,
    )


async def _control_plane(
    platform: Platform, nodes: int, **scheduler_env: str
) -> tuple[RabbitBroker, FakeNodes, Observer]:
    broker = create_broker(platform.amqp_url, app_id="test")
    fakes = FakeNodes(broker, nodes)
    observer = Observer(broker)
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready", **scheduler_env)
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    return broker, fakes, observer


async def _heard(platform: Platform, fakes: FakeNodes) -> None:
    for _ in range(100):
        log = platform.log_tail("scheduler", 100_000)
        if all(str(n) in log for n in fakes.ids):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(platform.log_tail("scheduler"))


async def test_deployments_spread_over_two_nodes_with_recorded_scores(
    platform: Platform,
) -> None:
    broker, fakes, observer = await _control_plane(platform, nodes=2)
    async with broker:
        await broker.start()
        await fakes.declare()
        await fakes.heartbeat()
        await _heard(platform, fakes)
        requests = [_request(i) for i in range(4)]
        for r in requests:
            await publish(broker, r, mandatory=True)
        await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 4)

    for r in requests:
        scheduled = observer.of(DeploymentScheduled, r.deployment_id)
        assert len(scheduled) == 1
        assert {s.node_id for s in scheduled[0].scores} == set(fakes.ids)
        assert scheduled[0].node_id in fakes.ids
    assert sorted(len(v) for v in fakes.work.values()) == [2, 2], dict(fakes.work)
    running = observer.of(DeploymentRunning)
    assert {e.app for e in running} == {"app0", "app1", "app2", "app3"}


async def test_a_redeploy_supersedes_the_running_deployment_and_stops_it(
    platform: Platform,
) -> None:
    broker, fakes, observer = await _control_plane(platform, nodes=1)
    async with broker:
        await broker.start()
        await fakes.declare()
        await fakes.heartbeat()
        await _heard(platform, fakes)
        first = _request(7)
        await publish(broker, first, mandatory=True)
        await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 1)
        second = _request(7, app="app7")
        await publish(broker, second, mandatory=True)
        await observer.wait(lambda: len(observer.of(DeploymentSuperseded)) == 1)
        for _ in range(50):
            if fakes.stopped:
                break
            await asyncio.sleep(0.1)
    superseded = observer.of(DeploymentSuperseded)[0]
    assert (superseded.deployment_id, superseded.by) == (first.deployment_id, second.deployment_id)
    assert fakes.stopped == [first.deployment_id]


async def test_without_live_nodes_a_deployment_ends_errored_with_the_reason(
    platform: Platform,
) -> None:
    broker, _fakes, observer = await _control_plane(
        platform, nodes=0, SHIPWRECK_PLACEMENT_WAIT_SECONDS="1"
    )
    async with broker:
        await broker.start()
        r = _request(1)
        await publish(broker, r, mandatory=True)
        await observer.wait(lambda: bool(observer.of(DeploymentErrored)))
    errored = observer.of(DeploymentErrored)[0]
    assert errored.reason == "no node can run it: no live node"


async def test_a_deployment_requested_while_no_node_is_live_waits_for_one(
    platform: Platform,
) -> None:
    broker, fakes, observer = await _control_plane(platform, nodes=1)
    async with broker:
        await broker.start()
        await fakes.declare()
        r = _request(2)
        await publish(broker, r, mandatory=True)
        # The only node is restarting: it is heard from only after the request came.
        await asyncio.sleep(2)
        assert not observer.of(DeploymentErrored)
        await fakes.heartbeat()
        await observer.wait(lambda: bool(observer.of(DeploymentRunning)))
    assert observer.of(DeploymentRunning)[0].node_id == fakes.ids[0]
    assert not observer.of(DeploymentErrored)


async def test_a_lost_node_is_detected_and_its_deployment_moves_to_a_live_node(
    platform: Platform,
) -> None:
    from shipwreck_contracts import DeploymentInitialized, NodeLost

    broker = create_broker(platform.amqp_url, app_id="test")
    fakes = FakeNodes(broker, 2)
    observer = Observer(broker)
    lost_seen: list[NodeLost] = []
    lost_queue = RabbitQueue(
        f"lost-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True, routing_key="node.lost.v1"
    )

    @broker.subscriber(lost_queue, events_exchange())
    async def on_lost(msg: NodeLost) -> None:
        lost_seen.append(msg)

    with platform.concurrently():
        platform.start(
            "scheduler",
            "shipwreck_scheduler",
            "scheduler ready",
            SHIPWRECK_NODE_TIMEOUT_SECONDS="2",
        )
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    doomed, survivor = fakes.ids
    async with broker:
        await broker.start()
        await fakes.declare()
        # Only the doomed node is alive at first, so the deployment lands there.
        await publish(
            broker,
            NodeHeartbeat(
                node_id=doomed,
                hostname="doomed",
                cpu_count=2,
                mem_total_mb=4096,
                mem_free_mb=3000,
                load_avg=0.1,
                at=datetime.now(UTC),
            ),
        )
        await _heard_ids(platform, [doomed])
        r = _request(42)
        await publish(broker, r, mandatory=True)
        await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 1)
        assert observer.of(DeploymentRunning)[0].node_id == doomed

        async def keep_survivor_alive() -> None:
            while True:
                await publish(
                    broker,
                    NodeHeartbeat(
                        node_id=survivor,
                        hostname="survivor",
                        cpu_count=2,
                        mem_total_mb=4096,
                        mem_free_mb=3000,
                        load_avg=0.1,
                        running=list(fakes.work[survivor]),
                        at=datetime.now(UTC),
                    ),
                )
                await asyncio.sleep(0.5)

        beats = asyncio.create_task(keep_survivor_alive())
        try:
            await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 2, seconds=30)
        finally:
            beats.cancel()
    assert [m.node_id for m in lost_seen] == [doomed]
    assert r.deployment_id in lost_seen[0].deployments
    second = observer.of(DeploymentRunning)[1]
    assert (second.deployment_id, second.node_id) == (r.deployment_id, survivor)
    again = observer.of(DeploymentInitialized, r.deployment_id)
    assert len(again) == 2  # initialized, then placed again after the loss


async def _heard_ids(platform: Platform, ids: list[uuid.UUID]) -> None:
    for _ in range(100):
        log = platform.log_tail("scheduler", 100_000)
        if all(str(n) in log for n in ids):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(platform.log_tail("scheduler"))


async def test_a_node_that_dies_while_the_scheduler_is_down_is_lost_after_its_restart(
    platform: Platform,
) -> None:
    from shipwreck_contracts import NodeLost

    broker = create_broker(platform.amqp_url, app_id="test")
    fakes = FakeNodes(broker, 2)
    observer = Observer(broker)
    lost_seen: list[NodeLost] = []
    lost_queue = RabbitQueue(
        f"lost-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True, routing_key="node.lost.v1"
    )

    @broker.subscriber(lost_queue, events_exchange())
    async def on_lost(msg: NodeLost) -> None:
        lost_seen.append(msg)

    timeout = {"SHIPWRECK_NODE_TIMEOUT_SECONDS": "2"}
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready", **timeout)
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    doomed, survivor = fakes.ids

    def beat(node_id: uuid.UUID, name: str) -> NodeHeartbeat:
        return NodeHeartbeat(
            node_id=node_id,
            hostname=name,
            cpu_count=2,
            mem_total_mb=4096,
            mem_free_mb=3000,
            load_avg=0.1,
            running=list(fakes.work[node_id]),
            at=datetime.now(UTC),
        )

    async with broker:
        await broker.start()
        await fakes.declare()
        await publish(broker, beat(doomed, "doomed"))
        await _heard_ids(platform, [doomed])
        r = _request(43)
        await publish(broker, r, mandatory=True)
        await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 1)
        # The scheduler goes down; the doomed node dies meanwhile and is never heard again.
        platform.stop("scheduler")

        async def keep_survivor_alive() -> None:
            while True:
                await publish(broker, beat(survivor, "survivor"))
                await asyncio.sleep(0.5)

        beats = asyncio.create_task(keep_survivor_alive())
        try:
            platform.start("scheduler-2", "shipwreck_scheduler", "scheduler ready", **timeout)
            await observer.wait(lambda: len(observer.of(DeploymentRunning)) == 2, seconds=30)
        finally:
            beats.cancel()
    # The restarted scheduler knew the doomed node from its store, not from a heartbeat.
    assert [m.node_id for m in lost_seen] == [doomed]
    second = observer.of(DeploymentRunning)[1]
    assert (second.deployment_id, second.node_id) == (r.deployment_id, survivor)
