"""Zero-downtime redeploys, rollbacks and image retention, over the in-memory ports.

What the node does with its app's route is the point here: a new deployment takes it only
once healthy, a failed or cancelled one never keeps it, a stop gives it up only if it
still has it. The same behaviours run on Docker and Caddy in
tests/integration/test_node_zero_downtime.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from shipwreck_contracts import (
    CancelWork,
    DeployWork,
    LogLine,
    LogStream,
    StageReported,
    StopWork,
    WorkFailed,
    WorkSucceeded,
)
from shipwreck_node.images import image_tag
from shipwreck_node.pipeline import Pipeline, container_name
from shipwreck_node.ports import LABEL_MANIFEST
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from shipwreck_node.work import WorkRunner
from tests.support.fakes_node import (
    SHIPWRECK_TOML,
    Block,
    Change,
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
APP = {"Shipwreck.toml": SHIPWRECK_TOML, "app.py": "print('hi')\n", "requirements.txt": "x\n"}


@dataclass
class Node:
    settings: NodeSettings
    git: FakeGit
    runtime: FakeRuntime
    probe: FakeProbe
    router: FakeRouter
    outbox: Outbox
    pipeline: Pipeline
    runner: WorkRunner

    def work(self, **changes: object) -> DeployWork:
        return deploy_work(URL, node_id=self.settings.node_id, **changes)  # type: ignore[arg-type]

    async def deploy(self, **changes: object) -> WorkSucceeded | WorkFailed:
        return await self.run(self.work(**changes))

    async def run(self, work: DeployWork) -> WorkSucceeded | WorkFailed:
        await self.runner.handle(work)
        outcome = await self.runner.wait(work.deployment_id)
        assert outcome is not None
        return outcome

    async def live(self, **changes: object) -> WorkSucceeded:
        outcome = await self.deploy(**changes)
        assert isinstance(outcome, WorkSucceeded), outcome
        return outcome

    async def stop(self, deployment: WorkSucceeded | DeployWork, reason: str = "") -> None:
        await self.runner.handle(
            StopWork(
                deployment_id=deployment.deployment_id,
                app="hello",
                node_id=self.settings.node_id,
                reason=reason,
                requested_at=datetime.now(UTC),
            )
        )
        await self.runner.wait_idle()

    async def cancel(self, work: DeployWork) -> None:
        await self.runner.handle(
            CancelWork(
                deployment_id=work.deployment_id,
                node_id=self.settings.node_id,
                requested_at=datetime.now(UTC),
            )
        )
        await self.runner.wait_idle()

    def upstream(self, outcome: WorkSucceeded) -> str:
        return f"127.0.0.1:{self.runtime.containers[outcome.container_id].info.host_port}"

    def stages(self, work: DeployWork) -> list[str]:
        return [
            m.stage.value
            for m in self.outbox.of(StageReported)
            if m.deployment_id == work.deployment_id
        ]

    def lines(self, deployment_id: uuid.UUID, stream: LogStream) -> list[str]:
        return [
            m.text
            for m in self.outbox.of(LogLine)
            if m.deployment_id == deployment_id and m.stream is stream
        ]


def make_node(tmp_path: Path, runtime: FakeRuntime | None = None, **settings: object) -> Node:
    """A node over fakes; ``runtime``: the Docker engine of another node, shared."""
    defaults: dict[str, object] = {
        "node_name": "unit-routing",
        "base_image_python": "base/python",
        "work_dir": str(tmp_path / "work"),
        "health_timeout_seconds": 0.3,
        "drain_seconds": 0,
    }
    node_settings = NodeSettings(**{**defaults, **settings})  # type: ignore[arg-type]
    git, router, outbox = FakeGit(), FakeRouter(), Outbox()
    runtime = runtime or FakeRuntime({"base/python"})
    git.push(URL, APP)
    probe = FakeProbe(runtime)
    routes = Routes(node_settings, runtime, router, probe)
    pipeline = Pipeline(
        node_settings,
        git=git,
        runtime=runtime,
        probe=probe,
        routes=routes,
        send=outbox.send,
        resolve=public_resolver,
    )
    runner = WorkRunner(node_settings, pipeline, runtime, outbox.send, routes=routes)
    return Node(node_settings, git, runtime, probe, router, outbox, pipeline, runner)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


# --- the route -----------------------------------------------------------------------------


async def test_an_app_is_routed_at_its_host_and_domain_and_reported_at_its_stable_url(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path, apps_domain="apps.example.com", proxy_http_port=8080)
    toml = SHIPWRECK_TOML + 'domain = "hello.example.org"\n'
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    outcome = await node.live()
    assert outcome.url == "http://hello.apps.example.com:8080/"
    assert node.router.hosts("hello") == ["hello.apps.example.com", "hello.example.org"]
    assert node.router.current("hello") == node.upstream(outcome)


async def test_a_proxy_that_came_back_without_routes_gets_every_app_routed_again(
    node: Node,
) -> None:
    outcome = await node.live()
    routes = node.pipeline.routes
    assert await routes.revive() is False  # the proxy runs: nothing to do
    node.router.lost = True  # Caddy exited and was started again, empty
    assert await routes.revive() is True
    assert node.router.current("hello") == node.upstream(outcome)
    assert node.router.hosts("hello") == ["hello.localhost"]


async def test_with_https_the_url_is_https(tmp_path: Path) -> None:
    node = make_node(tmp_path, apps_domain="apps.example.com", proxy_https_port=443)
    assert (await node.live()).url == "https://hello.apps.example.com/"


async def test_a_worker_without_a_port_gets_no_route_and_no_url(node: Node) -> None:
    node.git.push(URL, {**APP, "Shipwreck.toml": SHIPWRECK_TOML.replace("port = 8000\n", "")})
    outcome = await node.live()
    assert outcome.url == ""
    assert node.router.changes == []


async def test_a_redeploy_starts_beside_the_old_one_and_switches_in_one_change(
    node: Node,
) -> None:
    v1 = await node.live()
    node.git.push(URL, {**APP, "app.py": "print('v2')\n"})
    v2 = await node.live()
    assert container_name(node.work(deployment_id=v1.deployment_id)) != container_name(
        node.work(deployment_id=v2.deployment_id)
    )
    # Both run until the orchestrator stops the superseded one.
    assert {v1.container_id, v2.container_id} <= set(node.runtime.containers)
    assert node.router.changes == [
        Change("route", "hello", node.upstream(v1)),
        Change("route", "hello", node.upstream(v2)),
    ]
    assert v2.url == v1.url == "http://hello.localhost/"


class Gate(Block):
    """Makes a fake call wait until opened."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = anyio.Event()

    async def wait(self) -> None:
        self.entered.set()
        await self.opened.wait()


async def test_two_deployments_of_an_app_report_success_in_the_order_they_took_the_route(
    node: Node,
) -> None:
    # The orchestrator makes current the one whose success it hears last: had the second
    # reported first, it would stop the second (superseded) and leave the app unrouted.
    first, second = node.work(), node.work()
    node.router.block_route = gate = Gate()
    await node.runner.handle(first)
    with anyio.fail_after(5):
        await gate.entered.wait()  # the first has switched the route, not yet reported
    node.router.block_route = None
    await node.runner.handle(second)

    def done_or_waiting() -> bool:
        waiting = "waiting for another deployment of hello to finish taking its route"
        return bool(node.outbox.outcomes) or waiting in node.lines(
            second.deployment_id, LogStream.SYSTEM
        )

    with anyio.fail_after(5):
        await node.outbox.wait_until(done_or_waiting)
    gate.opened.set()
    await node.runner.wait_idle()
    succeeded = node.outbox.of(WorkSucceeded)
    assert len(node.outbox.outcomes) == len(succeeded) == 2, node.outbox.outcomes
    reported = [node.upstream(o) for o in succeeded]
    assert [c.upstream for c in node.router.changes] == reported
    assert node.router.current("hello") == reported[-1]


async def test_stopping_the_superseded_deployment_leaves_the_route_to_its_successor(
    node: Node,
) -> None:
    v1 = await node.live()
    v2 = await node.live()
    await node.stop(v1, "superseded")
    assert list(node.runtime.containers) == [v2.container_id]
    assert node.router.current("hello") == node.upstream(v2)
    assert node.lines(v1.deployment_id, LogStream.SYSTEM)[-1] == (
        "stopped: superseded (1 container removed)"
    )


async def test_stopping_the_app_removes_its_route(node: Node) -> None:
    v1 = await node.live()
    await node.stop(v1, "app stopped")
    assert node.router.current("hello") is None
    assert node.runtime.containers == {}


async def test_a_stop_gives_the_container_time_to_drain_after_the_route_goes(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path, drain_seconds=60)
    v1 = await node.live()
    await node.runner.handle(
        StopWork(
            deployment_id=v1.deployment_id,
            app="hello",
            node_id=node.settings.node_id,
            requested_at=datetime.now(UTC),
        )
    )
    with anyio.fail_after(5):
        await node.router.wait_until(lambda: node.router.current("hello") is None)
    assert v1.container_id in node.runtime.containers  # still answering what it was sent
    await node.runner.close()


@pytest.mark.parametrize(
    "breakage",
    ["build fails", "tests fail", "crashes at start", "never listens", "proxy refuses"],
)
async def test_a_failed_redeploy_leaves_the_old_one_serving(node: Node, breakage: str) -> None:
    v1 = await node.live()
    before = list(node.router.changes)
    toml = SHIPWRECK_TOML.replace("port = 8000", 'port = 8000\ntest = "pytest -q"')
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    if breakage == "build fails":
        node.runtime.build_error = "The command returned a non-zero code: 1"
    elif breakage == "tests fail":
        node.runtime.test_exit_code = 1
    elif breakage == "crashes at start":
        node.runtime.app_behaviour = "crash"
    elif breakage == "never listens":
        node.runtime.app_behaviour = "silent"
    else:
        node.router.failure = "Caddy admin API at 127.0.0.1:2019 is unreachable"
    outcome = await node.deploy()
    assert isinstance(outcome, WorkFailed)
    node.router.failure = None
    assert node.router.changes == before
    assert node.router.current("hello") == node.upstream(v1)
    assert list(node.runtime.containers) == [v1.container_id]


async def test_a_proxy_that_refuses_the_route_fails_the_deployment_at_starting(
    node: Node,
) -> None:
    node.router.failure = "Caddy refused the route of hello: 400 bad"
    outcome = await node.deploy()
    assert isinstance(outcome, WorkFailed)
    assert outcome.stage.value == "STARTING"
    assert outcome.reason.startswith("the app is healthy, but the node's reverse proxy")
    assert node.runtime.containers == {}


# --- cancellation --------------------------------------------------------------------------


async def cancel_when(node: Node, work: DeployWork, block: Block) -> None:
    await node.runner.handle(work)
    with anyio.fail_after(5):
        await block.entered.wait()
    await node.cancel(work)


@pytest.mark.parametrize("stage", ["CLONING", "BUILDING", "STARTING"])
async def test_a_cancelled_redeploy_leaves_nothing_and_the_route_untouched(
    node: Node, stage: str
) -> None:
    v1 = await node.live()
    before = list(node.router.changes)
    block = Block()
    if stage == "CLONING":
        node.git.block_fetch = block
    elif stage == "BUILDING":
        node.runtime.block_build = block
    else:
        node.probe.block = block  # the health check of the new container
    work = node.work()
    await cancel_when(node, work, block)
    assert node.outbox.stages[-1] == stage
    assert node.runtime.for_deployment(work.deployment_id) == []
    assert image_tag(work) not in node.runtime.images
    assert node.router.changes == before
    assert [o.deployment_id for o in node.outbox.outcomes] == [v1.deployment_id]


async def test_a_cancel_during_the_switch_hands_the_route_back(node: Node) -> None:
    v1 = await node.live()
    node.router.block_route = block = Block()
    work = node.work()
    await node.runner.handle(work)
    with anyio.fail_after(5):
        await block.entered.wait()
    node.router.block_route = None  # only the switch hangs, not the hand-back
    await node.cancel(work)
    assert node.router.current("hello") == node.upstream(v1)
    assert list(node.runtime.containers) == [v1.container_id]
    assert len(node.outbox.outcomes) == 1


async def test_a_cancel_that_crossed_the_success_report_hands_the_route_back(
    node: Node,
) -> None:
    v1 = await node.live()
    v2 = await node.live()
    await node.cancel(node.work(deployment_id=v2.deployment_id))
    assert node.router.current("hello") == node.upstream(v1)
    assert list(node.runtime.containers) == [v1.container_id]


async def test_a_cancelled_first_deployment_leaves_no_route(node: Node) -> None:
    v1 = await node.live()
    await node.cancel(node.work(deployment_id=v1.deployment_id))
    assert node.router.current("hello") is None


# --- redelivery ----------------------------------------------------------------------------


async def test_redelivered_work_routes_its_container_if_the_route_went_missing(
    node: Node,
) -> None:
    v1 = await node.live()
    await node.router.remove("hello")
    again = await node.deploy(deployment_id=v1.deployment_id)
    assert isinstance(again, WorkSucceeded)
    assert node.router.current("hello") == node.upstream(v1)


async def test_redelivered_work_never_takes_the_route_back_from_a_newer_deployment(
    node: Node,
) -> None:
    v1 = await node.live()
    v2 = await node.live()
    again = await node.deploy(deployment_id=v1.deployment_id)
    assert isinstance(again, WorkSucceeded)
    assert node.router.current("hello") == node.upstream(v2)


# --- rollback ------------------------------------------------------------------------------


async def test_a_rollback_runs_the_old_image_without_clone_or_build(node: Node) -> None:
    toml = SHIPWRECK_TOML + '\n[env-vars]\nGREETING = "from v1"\n'
    v1_commit = node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    v1 = await node.live()
    node.git.push(URL, {**APP, "app.py": "print('v2')\n"})
    v2 = await node.live()
    builds, git_calls = len(node.runtime.builds), len(node.git.calls)

    rollback = node.work(image=v1.image, commit=v1_commit)
    outcome = await node.run(rollback)
    assert isinstance(outcome, WorkSucceeded)
    assert len(node.runtime.builds) == builds
    assert len(node.git.calls) == git_calls
    assert node.stages(rollback) == ["STARTING"]
    assert node.lines(rollback.deployment_id, LogStream.BUILD) == []
    assert outcome.commit == v1_commit
    assert outcome.image == image_tag(rollback)
    container = node.runtime.containers[outcome.container_id]
    # The manifest it was built with: same port, same environment.
    assert container.spec.env == {"GREETING": "from v1", "PORT": "8000"}
    assert container.info.image_id == node.runtime.images[v1.image].id
    assert node.router.current("hello") == node.upstream(outcome)
    assert v2.container_id in node.runtime.containers  # until the orchestrator stops it


async def test_a_rollback_whose_image_is_gone_builds_the_commit_again(node: Node) -> None:
    commit = node.git.push(URL, APP)
    v1 = await node.live()
    await node.runtime.remove_image(v1.image)  # not while its container runs
    await node.stop(v1)
    await node.runtime.remove_image(v1.image)
    assert v1.image not in node.runtime.images
    work = node.work(image=v1.image, commit=commit)
    outcome = await node.run(work)
    assert isinstance(outcome, WorkSucceeded)
    assert node.stages(work) == ["CLONING", "BUILDING", "STARTING"]
    system = node.lines(work.deployment_id, LogStream.SYSTEM)
    assert f"the image {v1.image} is no longer on this node; building {commit} again" in system


async def test_a_rollback_to_an_image_of_another_app_builds_instead(node: Node) -> None:
    node.runtime.add_image("shipwreck/app-other:1", {"org.shipwreck.app": "other"})
    commit = node.git.push(URL, APP)
    outcome = await node.deploy(image="shipwreck/app-other:1", commit=commit)
    assert isinstance(outcome, WorkSucceeded)
    assert len(node.runtime.builds) == 1


async def test_a_failed_rollback_keeps_the_image_it_tried(node: Node) -> None:
    commit = node.git.push(URL, APP)
    v1 = await node.live()
    await node.stop(v1)
    node.runtime.app_behaviour = "crash"
    outcome = await node.deploy(image=v1.image, commit=commit)
    assert isinstance(outcome, WorkFailed)
    assert v1.image in node.runtime.images
    assert node.router.current("hello") is None


async def test_a_deployment_placed_again_runs_the_image_its_lost_node_built(
    tmp_path: Path,
) -> None:
    b = make_node(tmp_path / "b", node_name="unit-b")
    a = make_node(tmp_path / "a", runtime=b.runtime, node_name="unit-a")  # one Docker engine
    first = await b.live()
    await b.runtime.remove(first.container_id)  # B's machine died, and its app with it
    moved = a.work(
        deployment_id=first.deployment_id, attempt=2, image=first.image, commit=first.commit
    )
    outcome = await a.run(moved)
    assert isinstance(outcome, WorkSucceeded), outcome
    assert len(a.runtime.builds) == 1  # B's own build
    assert a.git.calls == []
    assert a.stages(moved) == ["STARTING"]
    assert a.outbox.of(StageReported)[-1].message == f"running its image {first.image} again"
    system = a.lines(moved.deployment_id, LogStream.SYSTEM)
    assert f"running its image {first.image} again (commit {first.commit}): no build" in system
    assert outcome.image == first.image
    assert first.image not in a.runtime.removed_images
    image_id = a.runtime.images[first.image].id
    assert a.runtime.containers[outcome.container_id].info.image_id == image_id
    assert a.router.current("hello") == a.upstream(outcome)


async def test_a_deployment_placed_again_where_its_image_is_not_builds_it(
    tmp_path: Path,
) -> None:
    b, a = make_node(tmp_path / "b"), make_node(tmp_path / "a")  # two machines
    first = await b.live()
    moved = a.work(
        deployment_id=first.deployment_id, attempt=2, image=first.image, commit=first.commit
    )
    outcome = await a.run(moved)
    assert isinstance(outcome, WorkSucceeded), outcome
    assert a.stages(moved) == ["CLONING", "BUILDING", "STARTING"]
    system = a.lines(moved.deployment_id, LogStream.SYSTEM)
    building = f"the image {first.image} is no longer on this node; building {first.commit} again"
    assert building in system
    assert outcome.image == first.image


async def test_the_image_carries_the_manifest_it_was_built_from(node: Node) -> None:
    await node.live()
    assert node.runtime.builds[0].labels[LABEL_MANIFEST] == SHIPWRECK_TOML


# --- image retention -----------------------------------------------------------------------


async def redeploy(node: Node, times: int) -> list[WorkSucceeded]:
    """Deploy ``times`` times, stopping each superseded deployment as the orchestrator does."""
    done: list[WorkSucceeded] = []
    for _ in range(times):
        done.append(await node.live())
        if len(done) > 1:
            await node.stop(done[-2], "superseded")
    return done


async def test_the_images_of_the_last_five_deployments_are_kept(node: Node) -> None:
    done = await redeploy(node, 7)
    kept = {str(d.deployment_id) for d in done[-5:]}
    assert node.runtime.tags_of("shipwreck/app-hello") == kept
    # The dependency stage's tag goes with its deployment's image.
    assert node.runtime.tags_of("shipwreck/deps-hello") == kept
    assert node.runtime.images["base/python"]  # never someone else's


async def test_an_image_a_container_still_uses_is_kept(tmp_path: Path) -> None:
    node = make_node(tmp_path, keep_images=2)
    first = await node.live()  # never stopped: still running
    done = [first, *await redeploy(node, 3)]
    tags = node.runtime.tags_of("shipwreck/app-hello")
    assert tags == {str(first.deployment_id), *(str(d.deployment_id) for d in done[-2:])}


async def test_a_rollback_makes_its_image_recent_again(tmp_path: Path) -> None:
    node = make_node(tmp_path, keep_images=2)
    commit = node.git.push(URL, APP)
    v1, v2 = await redeploy(node, 2)
    rollback = node.work(image=v1.image, commit=commit)
    back = await node.run(rollback)
    assert isinstance(back, WorkSucceeded)
    await node.stop(v2, "superseded")
    v3 = await node.live()
    await node.stop(back, "superseded")
    await node.pipeline.prune_images("hello")
    # v1's image was used last by the rollback: it outlives v2's, which is older in use.
    assert node.runtime.tags_of("shipwreck/app-hello") == {
        str(v1.deployment_id),
        str(rollback.deployment_id),
        str(v3.deployment_id),
    }


async def test_the_build_tags_the_dependency_stage(node: Node) -> None:
    outcome = await node.live()
    (build,) = node.runtime.builds
    assert build.stage_tags == {"deps": f"shipwreck/deps-hello:{outcome.deployment_id}"}
