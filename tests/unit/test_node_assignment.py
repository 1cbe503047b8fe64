"""A node carrying out its assignment, after a restart or a return: revive, remove, resume.

A "restart" is a second work runner over the same (in-memory) Docker, proxy and working
directory, the way a new node process finds what the old one left; each runner has its own
outbox, as each process has its own connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipwreck_contracts import (
    AssignedDeployment,
    DeploymentStatus,
    DeployWork,
    LogLine,
    LogStream,
    NodeAssignment,
    StageReported,
    WorkLost,
    WorkSucceeded,
)
from shipwreck_node.images import image_tag
from shipwreck_node.pipeline import Pipeline
from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_ROLE,
    Limits,
    RunSpec,
)
from shipwreck_node.reconcile import Abandon, Keep, Remove, Resume, Revive
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
S = DeploymentStatus


@dataclass
class Node:
    """One node's Docker, proxy and git, and the runner of its current process."""

    settings: NodeSettings
    git: FakeGit = field(default_factory=FakeGit)
    runtime: FakeRuntime = field(default_factory=lambda: FakeRuntime(images={"base/python"}))
    router: FakeRouter = field(default_factory=FakeRouter)
    outbox: Outbox = field(default_factory=Outbox)
    runner: WorkRunner | None = None

    def start(self) -> WorkRunner:
        """A new node process: a new runner (and outbox) over the same machine."""
        self.outbox = Outbox()
        probe = FakeProbe(self.runtime)
        routes = Routes(self.settings, self.runtime, self.router, probe)
        pipeline = Pipeline(
            self.settings,
            git=self.git,
            runtime=self.runtime,
            probe=probe,
            routes=routes,
            send=self.outbox.send,
            resolve=public_resolver,
        )
        # The node's clock is Docker's: output times and "followed until" compare.
        self.runner = WorkRunner(
            self.settings,
            pipeline,
            self.runtime,
            self.outbox.send,
            routes=routes,
            clock=self.runtime.now,
        )
        return self.runner

    @property
    def work(self) -> WorkRunner:
        assert self.runner is not None
        return self.runner

    async def deployed(self, **changes: object) -> tuple[DeployWork, WorkSucceeded]:
        work = deploy_work(URL, node_id=self.settings.node_id, **changes)  # type: ignore[arg-type]
        await self.work.handle(work)
        outcome = await self.work.wait(work.deployment_id)
        assert isinstance(outcome, WorkSucceeded), outcome
        return work, outcome

    async def assign(self, *deployments: AssignedDeployment) -> None:
        await self.work.handle(
            NodeAssignment(
                node_id=self.settings.node_id,
                deployments=list(deployments),
                reason="test",
                at=datetime.now(UTC),
            )
        )
        await self.work.wait_idle()

    def lines(self, work: DeployWork) -> list[LogLine]:
        return [m for m in self.outbox.of(LogLine) if m.deployment_id == work.deployment_id]


def running(work: DeployWork, image: str | None = None, **changes: object) -> AssignedDeployment:
    fields: dict[str, object] = {
        "deployment_id": work.deployment_id,
        "app": work.app,
        "attempt": work.attempt,
        "status": S.RUNNING,
        "repo_url": work.repo_url,
        "branch": work.branch,
        "commit": work.commit,
        "image": image or image_tag(work),
        "requested_at": work.requested_at,
    }
    fields.update(changes)
    return AssignedDeployment(**fields)  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    settings = NodeSettings(
        node_name="unit-assigned",
        base_image_python="base/python",
        work_dir=str(tmp_path / "work"),
        health_timeout_seconds=0.3,
        drain_seconds=0,
    )
    n = Node(settings)
    n.git.push(URL, APP)
    n.start()
    return n


async def restart(node: Node) -> WorkRunner:
    """Stop the node process (its apps keep running) and start a new one."""
    await node.work.close()
    runner = node.start()
    await runner.recover()
    return runner


async def test_after_a_restart_a_removed_app_container_is_started_again_from_its_image(
    node: Node,
) -> None:
    work, v1 = await node.deployed()
    await restart(node)
    await node.runtime.remove(v1.container_id)  # by hand, while the node was down

    await node.assign(running(work))
    (revived,) = node.runtime.for_deployment(work.deployment_id)
    assert revived.info.running
    assert revived.info.kept_running
    assert revived.spec.image == image_tag(work)
    assert node.runtime.builds[1:] == []  # no build, no clone: its image ran again
    assert node.router.current(work.app) == f"127.0.0.1:{revived.info.host_port}"
    # It was RUNNING all along: nothing to report.
    assert node.outbox.of(WorkSucceeded) == node.outbox.of(WorkLost) == []
    assert node.outbox.of(StageReported) == []


async def test_a_restarted_node_numbers_its_log_lines_after_those_it_sent_before(
    node: Node,
) -> None:
    node.runtime.app_output = [(LogStream.STDOUT, "listening\n")]
    work, v1 = await node.deployed()
    await node.outbox.wait_until(lambda: "listening" in [m.text for m in node.lines(work)])
    before = max(m.sequence for m in node.lines(work))
    await restart(node)
    await node.runtime.remove(v1.container_id)

    await node.assign(running(work))
    after = node.lines(work)
    assert after, "the revival says what it does"
    assert min(m.sequence for m in after) > before
    assert all(m.attempt == work.attempt for m in after)


async def test_a_kept_app_is_followed_again_from_where_the_old_process_stopped(
    node: Node,
) -> None:
    node.runtime.app_output = [(LogStream.STDOUT, "listening\n")]
    work, v1 = await node.deployed()
    await node.outbox.wait_until(lambda: "listening" in [m.text for m in node.lines(work)])
    before = max(m.sequence for m in node.lines(work))
    await node.work.close()
    # The app prints while no node follows it.
    node.runtime.write(v1.container_id, LogStream.STDOUT, "request: GET /\n", node.runtime.now())
    runner = node.start()
    await runner.recover()

    await node.assign(running(work))
    await node.outbox.wait_until(lambda: bool(node.lines(work)))
    (line,) = node.lines(work)  # not "listening" again: that was sent before
    assert (line.text, line.stream, line.attempt) == ("request: GET /", LogStream.STDOUT, 1)
    assert line.sequence > before


async def test_strays_are_removed_with_their_routes(node: Node) -> None:
    work, v1 = await node.deployed()
    node.runtime.add_image("img")
    stray = await node.runtime.start(
        RunSpec(
            image="img",
            name="shipwreck-stray",
            command=None,
            env={},
            labels={
                LABEL_NODE: str(node.settings.node_id),
                LABEL_ROLE: "app",
                LABEL_APP: "stray",
                LABEL_DEPLOYMENT: str(uuid.uuid4()),
                LABEL_PORT: "8000",
            },
            limits=Limits(64, 0.5, 32),
            port=8000,
        )
    )
    await node.runtime.keep_running(stray.id)
    await restart(node)
    assert node.router.current("stray") == f"127.0.0.1:{stray.host_port}"

    await node.assign(running(work))
    assert list(node.runtime.containers) == [v1.container_id]
    assert node.router.current("stray") is None
    kept = node.runtime.containers[v1.container_id].info
    assert node.router.current(work.app) == f"127.0.0.1:{kept.host_port}"


async def test_an_empty_assignment_removes_what_a_returning_node_no_longer_owns(
    node: Node,
) -> None:
    work, _ = await node.deployed()
    # Not restarted: cut off, declared lost, its deployment placed on another node.
    await node.assign()
    assert node.runtime.containers == {}
    assert node.router.current(work.app) is None
    assert await node.work.running() == []


async def test_a_deployment_whose_image_is_gone_is_reported_lost(node: Node) -> None:
    work, v1 = await node.deployed()
    await restart(node)
    await node.runtime.remove(v1.container_id)
    await node.runtime.remove_image(image_tag(work))

    await node.assign(running(work, attempt=3))
    (lost,) = node.outbox.of(WorkLost)
    assert (lost.deployment_id, lost.attempt) == (work.deployment_id, 3)
    assert lost.reason == (
        f"its container is gone and its image {image_tag(work)} is no longer on this node"
    )
    assert node.runtime.containers == {}


async def test_work_no_longer_assigned_is_abandoned_and_its_late_work_ignored(
    node: Node,
) -> None:
    node.runtime.block_build = block = Block()
    work = deploy_work(URL, node_id=node.settings.node_id)
    await node.work.handle(work)
    await block.entered.wait()

    await node.assign()
    assert node.runtime.containers == {}
    assert image_tag(work) not in node.runtime.images
    node.runtime.block_build = None
    await node.work.handle(work)  # the same attempt, redelivered: stale
    await node.work.wait_idle()
    assert node.outbox.of(WorkSucceeded) == []
    # A newer attempt (the deployment was placed here again) runs.
    again = DeployWork(**{**_fields(work), "attempt": 2})
    await node.work.handle(again)
    outcome = await node.work.wait(work.deployment_id)
    assert isinstance(outcome, WorkSucceeded)
    assert outcome.attempt == 2


async def test_a_newer_attempt_replaces_the_work_of_an_older_one(node: Node) -> None:
    node.runtime.block_build = block = Block()
    work = deploy_work(URL, node_id=node.settings.node_id)
    await node.work.handle(work)
    await block.entered.wait()
    node.runtime.block_build = None

    await node.work.handle(DeployWork(**{**_fields(work), "attempt": 2}))
    await node.work.wait_idle()
    assert [o.attempt for o in node.outbox.outcomes] == [2]
    assert len(node.runtime.for_deployment(work.deployment_id)) == 1


async def test_a_deployment_in_progress_when_the_node_stopped_is_deployed_again(
    node: Node,
) -> None:
    node.runtime.block_build = block = Block()
    work = deploy_work(URL, node_id=node.settings.node_id)
    await node.work.handle(work)
    await block.entered.wait()
    node.runtime.block_build = None
    await restart(node)

    await node.assign(running(work, image=None, status=S.BUILDING))
    (outcome,) = node.outbox.outcomes
    assert isinstance(outcome, WorkSucceeded)
    assert outcome.deployment_id == work.deployment_id


async def test_the_actions_taken_are_returned(node: Node) -> None:
    kept, _ = await node.deployed()
    revived, gone = await node.deployed(app="other")
    await node.runtime.remove(gone.container_id)
    node.runtime.block_build = Block()
    abandoned = deploy_work(URL, node_id=node.settings.node_id, app="third")
    await node.work.handle(abandoned)
    resumed = running(deploy_work(URL, node_id=node.settings.node_id), status=S.SCHEDULED)

    actions = await node.work.reconcile(
        NodeAssignment(
            node_id=node.settings.node_id,
            deployments=[running(kept), running(revived), resumed],
            at=datetime.now(UTC),
        )
    )
    kinds: Sequence[type] = [type(a) for a in actions]
    assert sorted(k.__name__ for k in kinds) == sorted(
        k.__name__ for k in (Keep, Revive, Resume, Abandon)
    )
    assert Remove not in kinds
    await node.work.close()


def _fields(work: DeployWork) -> dict[str, object]:
    return {f: getattr(work, f) for f in work.__struct_fields__}
