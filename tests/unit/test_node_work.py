"""The node's work queue: deployments run as tasks, cancel and stop clean up, nothing blocks.

Driven through the node's composition root on FastStream's in-memory broker, with the
in-memory ports of tests/support/fakes_node.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from faststream import TestApp
from faststream.rabbit import RabbitBroker, RabbitQueue

from shipwreck_contracts import (
    CancelWork,
    DeployWork,
    LogLine,
    LogStream,
    NodeHeartbeat,
    NodeRegistered,
    StageReported,
    StopWork,
    WorkFailed,
    WorkSucceeded,
    tag_of,
)
from shipwreck_messaging import create_broker, events_exchange, node_work_routing_key, publish
from shipwreck_messaging.testing import in_memory
from shipwreck_node.app import Heartbeat, create_app
from shipwreck_node.images import image_tag
from shipwreck_node.metrics import Capacity
from shipwreck_node.pipeline import Pipeline
from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_DOMAIN,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_ROLE,
    ContainerInfo,
    Limits,
    RunSpec,
)
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from shipwreck_node.work import WorkRunner
from tests.support.fakes_node import (
    SHIPWRECK_TOML,
    Block,
    FakeGit,
    FakeProbe,
    FakeRouter,
    FakeRuntime,
    Outbox,
    deploy_work,
    public_resolver,
)

pytestmark = pytest.mark.anyio

URL = "https://git.example.com/acme/hello.git"
APP = {"Shipwreck.toml": SHIPWRECK_TOML, "app.py": "print('hi')\n"}


@dataclass
class Harness:
    settings: NodeSettings
    git: FakeGit
    runtime: FakeRuntime
    router: FakeRouter
    outbox: Outbox
    runner: WorkRunner

    def work(self, **changes: object) -> DeployWork:
        return deploy_work(URL, node_id=self.settings.node_id, **changes)  # type: ignore[arg-type]

    def cancel(self, work: DeployWork, reason: str = "") -> CancelWork:
        return CancelWork(
            deployment_id=work.deployment_id,
            node_id=self.settings.node_id,
            attempt=work.attempt,
            reason=reason,
            requested_at=datetime.now(UTC),
        )

    def stop(self, work: DeployWork, reason: str = "") -> StopWork:
        return StopWork(
            deployment_id=work.deployment_id,
            app=work.app,
            node_id=self.settings.node_id,
            reason=reason,
            requested_at=datetime.now(UTC),
        )

    def system_lines(self, work: DeployWork) -> list[str]:
        return [
            m.text
            for m in self.outbox.of(LogLine)
            if m.deployment_id == work.deployment_id and m.stream is LogStream.SYSTEM
        ]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    settings = NodeSettings(
        node_name="unit-work",
        base_image_python="base/python",
        work_dir=str(tmp_path / "work"),
        health_timeout_seconds=0.3,
        drain_seconds=0,
    )
    git = FakeGit()
    git.push(URL, APP)
    runtime = FakeRuntime(images={"base/python"})
    router = FakeRouter()
    outbox = Outbox()
    probe = FakeProbe(runtime)
    routes = Routes(settings, runtime, router, probe)
    pipeline = Pipeline(
        settings,
        git=git,
        runtime=runtime,
        probe=probe,
        routes=routes,
        send=outbox.send,
        resolve=public_resolver,
    )
    runner = WorkRunner(settings, pipeline, runtime, outbox.send, routes=routes)
    return Harness(settings, git, runtime, router, outbox, runner)


async def test_cancel_during_the_clone_kills_it_and_reports_nothing(harness: Harness) -> None:
    harness.git.block_fetch = block = Block()
    work = harness.work()
    await harness.runner.handle(work)
    await block.entered.wait()
    await harness.runner.handle(harness.cancel(work, "user asked"))
    await harness.runner.wait_idle()
    assert harness.outbox.outcomes == []
    assert harness.outbox.stages == ["CLONING"]
    assert harness.system_lines(work)[-1] == "cancelled: user asked (0 containers removed)"
    assert not any(harness.settings.node_work_dir.iterdir())


async def test_cancel_during_the_build_leaves_no_image_and_no_container(harness: Harness) -> None:
    harness.runtime.block_build = block = Block()
    work = harness.work()
    await harness.runner.handle(work)
    await block.entered.wait()
    await harness.runner.handle(harness.cancel(work))
    await harness.runner.wait_idle()
    assert harness.outbox.outcomes == []
    assert harness.runtime.containers == {}
    assert image_tag(work) not in harness.runtime.images


async def test_cancel_during_the_test_removes_the_test_container(harness: Harness) -> None:
    toml = SHIPWRECK_TOML.replace("port = 8000", 'port = 8000\ntest = "sleep 600"')
    harness.git.push(URL, {**APP, "Shipwreck.toml": toml})
    harness.runtime.block_test = block = Block()
    work = harness.work()
    await harness.runner.handle(work)
    await block.entered.wait()
    assert len(harness.runtime.for_deployment(work.deployment_id)) == 1
    await harness.runner.handle(harness.cancel(work))
    await harness.runner.wait_idle()
    assert harness.runtime.for_deployment(work.deployment_id) == []
    assert harness.outbox.outcomes == []


async def test_a_cancelled_deployment_is_not_revived_by_a_late_deploy(harness: Harness) -> None:
    work = harness.work()
    await harness.runner.handle(harness.cancel(work))
    await harness.runner.handle(work)
    await harness.runner.wait_idle()
    assert harness.outbox.stages == []


async def test_a_slow_deployment_does_not_hold_up_the_next_one(harness: Harness) -> None:
    harness.runtime.block_build = block = Block()
    slow = harness.work()
    await harness.runner.handle(slow)
    await block.entered.wait()
    harness.runtime.block_build = None
    fast = harness.work()
    await harness.runner.handle(fast)
    outcome = await harness.runner.wait(fast.deployment_id)
    assert isinstance(outcome, WorkSucceeded)
    assert slow.deployment_id in await harness.runner.running()
    await harness.runner.close()


async def test_stop_removes_the_container_and_says_so(harness: Harness) -> None:
    work = harness.work()
    await harness.runner.handle(work)
    outcome = await harness.runner.wait(work.deployment_id)
    assert isinstance(outcome, WorkSucceeded)
    assert await harness.runner.running() == [work.deployment_id]
    await harness.runner.handle(harness.stop(work, "superseded"))
    await harness.runner.wait_idle()
    assert harness.runtime.containers == {}
    assert await harness.runner.running() == []
    assert harness.system_lines(work)[-1] == "stopped: superseded (1 container removed)"
    # The stop is numbered after everything else the deployment logged.
    sequences = [m.sequence for m in harness.outbox.of(LogLine)]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)


async def test_the_running_app_output_is_followed_after_the_build(harness: Harness) -> None:
    harness.runtime.app_output = [(LogStream.STDOUT, "ready\n"), (LogStream.STDERR, "warn\n")]
    work = harness.work()
    await harness.runner.handle(work)
    await harness.runner.wait(work.deployment_id)
    await harness.outbox.wait_for(LogLine, 1)
    while "warn" not in harness.outbox.lines(LogStream.STDERR):
        await harness.outbox.changed.wait()
    assert harness.outbox.lines(LogStream.STDOUT) == ["ready"]


async def test_recovery_removes_leftovers_and_routes_the_healthy_apps_again(
    harness: Harness,
) -> None:
    node = str(harness.settings.node_id)

    async def start(role: str, *, running: bool = True, healthy: bool = True) -> ContainerInfo:
        spec = RunSpec(
            image="img",
            name=f"c-{uuid.uuid4().hex}",
            command=None,
            env={},
            labels={
                LABEL_NODE: node,
                LABEL_ROLE: role,
                LABEL_APP: "shop",
                LABEL_PORT: "8000",
                LABEL_DOMAIN: "shop.example.org",
            },
            limits=Limits(64, 0.5, 32),
            port=8000,
        )
        info = await harness.runtime.start(spec)
        if healthy:
            await harness.runtime.keep_running(info.id)
        record = harness.runtime.containers[info.id]
        record.info = replace(record.info, running=running)
        return record.info

    harness.runtime.add_image("img")
    older = await start("app")
    kept = await start("app")
    await start("app", running=False)
    await start("app", healthy=False)  # its deployment died before the health check passed
    await start("test")
    # Caddy kept a route to a container that is gone.
    await harness.router.route("gone", ["gone.localhost"], "127.0.0.1:1")

    await harness.runner.recover()
    assert list(harness.runtime.containers) == [older.id, kept.id]
    assert harness.router.current("shop") == f"127.0.0.1:{kept.host_port}"
    assert harness.router.hosts("shop") == ["shop.localhost", "shop.example.org"]
    assert harness.router.current("gone") is None


def test_heartbeats_list_the_running_deployments() -> None:
    settings = NodeSettings(node_name="hb")
    capacity = Capacity(cpu_count=2, mem_total_mb=2048, mem_free_mb=1024, load_avg=0.5)
    heartbeat = Heartbeat(settings, create_broker("amqp://unused/", app_id="t"), lambda: capacity)
    ids = [uuid.uuid4(), uuid.uuid4()]
    beat = heartbeat.beat(ids)
    assert beat.running == ids
    assert beat.node_id == settings.node_id


async def test_a_heartbeat_goes_out_on_time_while_listing_the_containers_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node whose Docker engine is slow to list containers (busy building a queue of
    deployments) still heartbeats every interval, with the newest list it has: before, it
    waited for the listing and the scheduler declared it lost."""
    settings = NodeSettings(node_name="hb-slow", heartbeat_seconds=0.05)
    broker = create_broker("amqp://unused/", app_id="test")
    outbox = Outbox()

    for kind in (NodeRegistered, NodeHeartbeat):

        @broker.subscriber(
            RabbitQueue(f"test.{tag_of(kind)}", routing_key=tag_of(kind)), events_exchange()
        )
        async def collect(message: NodeRegistered | NodeHeartbeat) -> None:
            await outbox.send(message)

    answer = anyio.Event()
    listings = 0
    ids = [uuid.uuid4()]

    async def slow_listing() -> list[uuid.UUID]:
        nonlocal listings
        listings += 1
        await answer.wait()
        return ids

    async with in_memory(broker) as test_broker, anyio.create_task_group() as tasks:
        heartbeat = Heartbeat(settings, test_broker, running=slow_listing)
        tasks.start_soon(heartbeat.run)
        with anyio.fail_after(10):
            beats = await outbox.wait_for(NodeHeartbeat, 4)
        assert [b.running for b in beats] == [[]] * 4  # nothing listed yet, and on time
        assert listings == 1  # the slow listing was waited for, not asked again
        answer.set()
        with anyio.fail_after(10):
            await outbox.wait_until(lambda: outbox.of(NodeHeartbeat)[-1].running == ids)
        tasks.cancel_scope.cancel()
    assert "listing this node's containers took over 0.1 s" in caplog.text


# --- through the composition root, on the in-memory broker ------------------------------


Reported = StageReported | WorkSucceeded | WorkFailed | LogLine | NodeHeartbeat


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[NodeSettings, Outbox, RabbitBroker]]:
    settings = NodeSettings(
        node_name="unit-wired",
        base_image_python="base/python",
        work_dir=str(tmp_path / "work"),
        heartbeat_seconds=3600,
    )
    git = FakeGit()
    git.push(URL, APP)
    runtime = FakeRuntime(images={"base/python"})
    broker = create_broker("amqp://unused/", app_id="test")
    create_app(
        settings,
        broker=broker,
        git=git,
        runtime=runtime,
        probe=FakeProbe(runtime),
        router=FakeRouter(),
        resolve=public_resolver,
    )
    outbox = Outbox()
    for kind in (StageReported, WorkSucceeded, WorkFailed, LogLine, NodeHeartbeat):
        queue = RabbitQueue(f"test.{tag_of(kind)}", routing_key=tag_of(kind))

        @broker.subscriber(queue, events_exchange())
        async def collect(message: Reported) -> None:
            await outbox.send(message)

    async with in_memory(broker) as test_broker:
        yield settings, outbox, test_broker


async def test_work_on_the_node_queue_is_deployed_and_reported(
    wired: tuple[NodeSettings, Outbox, RabbitBroker],
) -> None:
    settings, outbox, broker = wired
    work = deploy_work(URL, node_id=settings.node_id)
    await publish(broker, work, routing_key=node_work_routing_key(str(settings.node_id)))
    (succeeded,) = await outbox.wait_for(WorkSucceeded)
    assert succeeded.deployment_id == work.deployment_id
    assert outbox.stages == ["CLONING", "BUILDING", "STARTING"]


async def test_the_log_says_what_the_node_does(
    wired: tuple[NodeSettings, Outbox, RabbitBroker],
) -> None:
    settings, outbox, broker = wired
    work = deploy_work(URL, node_id=settings.node_id)
    await publish(broker, work, routing_key=node_work_routing_key(str(settings.node_id)))
    await outbox.wait_for(WorkSucceeded)
    system = [m.text for m in outbox.of(LogLine) if m.stream is LogStream.SYSTEM]
    assert system[0] == f"resolving main of {URL}"
    assert system[-1] == "running at http://hello.localhost/"


async def test_the_node_starts_its_proxy_routes_its_apps_again_and_stops_the_proxy(
    tmp_path: Path,
) -> None:
    settings = NodeSettings(
        node_name="unit-life", work_dir=str(tmp_path / "work"), heartbeat_seconds=3600
    )
    runtime = FakeRuntime(images={"img"})
    # An app that kept running while the node was away.
    spec = RunSpec(
        image="img",
        name="shipwreck-shop-1",
        command=None,
        env={},
        labels={LABEL_NODE: str(settings.node_id), LABEL_ROLE: "app", LABEL_APP: "shop"},
        limits=Limits(64, 0.5, 32),
        port=8000,
    )
    shop = await runtime.start(spec)
    await runtime.keep_running(shop.id)
    router = FakeRouter()
    broker = create_broker("amqp://unused/", app_id="test")
    app = create_app(
        settings,
        broker=broker,
        git=FakeGit(),
        runtime=runtime,
        probe=FakeProbe(runtime),
        router=router,
        resolve=public_resolver,
    )
    async with in_memory(broker), TestApp(app):
        assert router.started
        assert router.current("shop") == f"127.0.0.1:{shop.host_port}"
        assert not router.closed
    assert router.closed
