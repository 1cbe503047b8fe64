"""The deployment pipeline over in-memory ports: what it reports, and what it leaves behind.

The same behaviours run against real git and Docker in tests/integration/test_node_pipeline.py;
here they are fast enough to cover every branch.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shipwreck_contracts import (
    LogLine,
    LogStream,
    Stage,
    StageReported,
    WorkFailed,
    WorkSucceeded,
)
from shipwreck_node.images import image_tag
from shipwreck_node.logsink import DeploymentLog
from shipwreck_node.pipeline import Pipeline
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from tests.support.fakes_node import (
    SHIPWRECK_TOML,
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


class Node:
    """A pipeline wired to fakes, as the node's composition root wires the real ones."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        defaults: dict[str, object] = {
            "node_name": "unit-node",
            "base_image_python": "base/python",
            "base_image_node": "base/node",
            "work_dir": str(tmp_path / "work"),
            "health_timeout_seconds": 0.3,
            "worker_grace_seconds": 0.0,
        }
        self.settings = NodeSettings(**{**defaults, **settings})  # type: ignore[arg-type]
        self.git = FakeGit()
        self.runtime = FakeRuntime(images={"base/python", "base/node"})
        self.router = FakeRouter()
        self.outbox = Outbox()
        probe = FakeProbe(self.runtime)
        self.pipeline = Pipeline(
            self.settings,
            git=self.git,
            runtime=self.runtime,
            probe=probe,
            routes=Routes(self.settings, self.runtime, self.router, probe),
            send=self.outbox.send,
            resolve=public_resolver,
        )

    async def deploy(self, url: str = URL, **work: object) -> WorkSucceeded | WorkFailed:
        job = deploy_work(url, node_id=self.settings.node_id, **work)  # type: ignore[arg-type]
        log = DeploymentLog(self.outbox.send, job.deployment_id, job.attempt)
        return await self.pipeline.deploy(job, log)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def failed(outcome: WorkSucceeded | WorkFailed) -> WorkFailed:
    assert isinstance(outcome, WorkFailed), outcome
    return outcome


async def test_a_deployment_reports_each_stage_then_success(node: Node) -> None:
    commit = node.git.push(URL, APP)
    outcome = await node.deploy(attempt=3)
    assert isinstance(outcome, WorkSucceeded)
    assert node.outbox.stages == ["CLONING", "BUILDING", "STARTING"]
    assert node.outbox.outcomes == [outcome]
    assert outcome.commit == commit
    assert outcome.url == "http://hello.localhost/"
    assert outcome.image == image_tag(deploy_work(app="hello", deployment_id=outcome.deployment_id))
    # Every report and line echoes the attempt of the work.
    assert {m.attempt for m in node.outbox.messages if hasattr(m, "attempt")} == {3}


async def test_the_cloning_report_carries_the_resolved_commit(node: Node) -> None:
    commit = node.git.push(URL, APP)
    await node.deploy()
    cloning = node.outbox.of(StageReported)[0]
    assert (cloning.stage, cloning.commit) == (Stage.CLONING, commit)
    assert all(report.commit == commit for report in node.outbox.of(StageReported))


async def test_testing_is_reported_only_when_the_manifest_has_a_test(node: Node) -> None:
    toml = SHIPWRECK_TOML.replace("port = 8000", 'port = 8000\ntest = "pytest -q"')
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    outcome = await node.deploy()
    assert isinstance(outcome, WorkSucceeded)
    assert node.outbox.stages == ["CLONING", "BUILDING", "TESTING", "STARTING"]
    assert "all passed" in node.outbox.lines(LogStream.TEST)
    assert not [c for c in node.runtime.containers.values() if c.spec.name.endswith("-test")]


async def test_a_pinned_commit_is_deployed_without_resolving_the_branch(node: Node) -> None:
    commit = node.git.push(URL, APP)
    outcome = await node.deploy(commit=commit)
    assert isinstance(outcome, WorkSucceeded)
    assert ("resolve", URL) not in node.git.calls


async def test_a_refused_url_fails_cloning_without_touching_git(node: Node) -> None:
    outcome = failed(await node.deploy("file:///etc"))
    assert outcome.stage is Stage.CLONING
    assert "file://" in outcome.reason
    assert node.git.calls == []
    assert node.outbox.stages == []


async def test_a_private_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    url = "git://127.0.0.1:9418/hello.git"
    strict = Node(tmp_path)
    strict.git.push(url, APP)
    outcome = failed(await strict.deploy(url))
    assert "SHIPWRECK_GIT_ALLOW_PRIVATE" in outcome.reason
    assert strict.git.calls == []

    relaxed = Node(tmp_path, git_allow_private=True)
    relaxed.git.push(url, APP)
    assert isinstance(await relaxed.deploy(url), WorkSucceeded)


async def test_a_bad_branch_name_is_refused_before_git_runs(node: Node) -> None:
    outcome = failed(await node.deploy(branch="--upload-pack=touch /tmp/x"))
    assert outcome.stage is Stage.CLONING
    assert "starts with '-'" in outcome.reason
    assert node.git.calls == []


async def test_an_unknown_branch_says_which_and_where(node: Node) -> None:
    node.git.push(URL, APP)
    outcome = failed(await node.deploy(branch="release"))
    assert outcome.stage is Stage.CLONING
    assert "'release' does not exist" in outcome.reason
    assert outcome.commit is None


async def test_an_unreachable_repository_fails_cloning(node: Node) -> None:
    node.git.unreachable.add(URL)
    node.git.push(URL, APP)
    outcome = failed(await node.deploy())
    assert outcome.reason.startswith("cannot reach the repository:")


async def test_a_repository_without_manifest_names_the_repo_and_commit(node: Node) -> None:
    commit = node.git.push(URL, {"app.py": "print('hi')\n"})
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.CLONING
    assert outcome.reason.startswith(f"no Shipwreck.toml in {URL}@{commit}")
    assert outcome.commit == commit


@pytest.mark.parametrize("name", ["shipwreck.toml", "Config.toml"])
async def test_the_other_manifest_names_are_found(node: Node, name: str) -> None:
    node.git.push(URL, {name: SHIPWRECK_TOML, "app.py": ""})
    assert isinstance(await node.deploy(), WorkSucceeded)


async def test_manifest_errors_are_all_reported(node: Node) -> None:
    toml = '[app]\nname = "My_App"\n[config]\nlang = "ruby"\nrun = "x"\nport = 0\n'
    node.git.push(URL, {"Shipwreck.toml": toml})
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.CLONING
    lines = outcome.reason.splitlines()
    fields = [line.split(":")[1].strip() for line in lines]
    assert fields == ["app.name", "config.lang", "config.port"]
    assert "is not a supported language" in outcome.reason
    assert node.runtime.builds == []


async def test_a_manifest_that_is_a_symlink_in_git_is_refused(node: Node) -> None:
    node.git.push(URL, {"Shipwreck.toml": "/etc/passwd"}, symlinks=["Shipwreck.toml"])
    outcome = failed(await node.deploy())
    assert "Shipwreck.toml is a symbolic link" in outcome.reason


async def test_a_requirements_file_that_is_a_symlink_is_refused(node: Node) -> None:
    node.git.push(URL, APP, symlinks=["requirements.txt"])
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.BUILDING
    assert "requirements.txt is a symbolic link" in outcome.reason


async def test_manifest_warnings_reach_the_success_report(node: Node) -> None:
    toml = SHIPWRECK_TOML + 'colour = "blue"\n'
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    outcome = await node.deploy()
    assert isinstance(outcome, WorkSucceeded)
    assert outcome.warnings == ["Shipwreck.toml: unknown key 'config.colour' ignored"]


async def test_a_build_failure_reports_the_error_and_the_last_lines(node: Node) -> None:
    node.git.push(URL, APP)
    node.runtime.build_output = ["Collecting nope\n", "ERROR: No matching distribution for nope\n"]
    node.runtime.build_error = (
        "The command '/bin/sh -c /opt/venv/bin/pip install -r /tmp/requirements.txt' "
        "returned a non-zero code: 1"
    )
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.BUILDING
    assert outcome.reason.startswith("installing the Python dependencies from requirements.txt")
    assert "ERROR: No matching distribution for nope" in outcome.reason
    assert node.runtime.containers == {}


async def test_a_missing_base_image_names_the_setting_and_just_images(node: Node) -> None:
    del node.runtime.images["base/python"]
    node.git.push(URL, APP)
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.BUILDING
    assert "SHIPWRECK_BASE_IMAGE_PYTHON" in outcome.reason
    assert "`just images`" in outcome.reason
    assert "cannot be pulled (pull access denied" in outcome.reason


async def test_a_missing_base_image_that_can_be_pulled_is_pulled(node: Node) -> None:
    del node.runtime.images["base/python"]
    node.runtime.pullable.add("base/python")
    node.git.push(URL, APP)
    assert isinstance(await node.deploy(), WorkSucceeded)


async def test_a_failing_test_blocks_the_rollout(node: Node) -> None:
    toml = SHIPWRECK_TOML.replace("port = 8000", 'port = 8000\ntest = "pytest -q"')
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    node.runtime.test_exit_code = 2
    node.runtime.test_output = ["FAILED test_x\n"]
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.TESTING
    assert outcome.reason.startswith("test command `pytest -q` exited 2")
    assert "FAILED test_x" in outcome.reason
    assert node.runtime.containers == {}
    assert node.outbox.stages == ["CLONING", "BUILDING", "TESTING"]


async def test_an_app_that_crashes_at_start_reports_its_exit_and_output(node: Node) -> None:
    node.git.push(URL, APP)
    node.runtime.app_behaviour = "crash"
    node.runtime.crash_exit_code = 3
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.STARTING
    assert outcome.reason.startswith("app crashed at start: exited 3: ")
    assert "Traceback: boom" in outcome.reason
    assert node.runtime.containers == {}
    tag = image_tag(deploy_work(deployment_id=outcome.deployment_id))
    assert tag in node.runtime.removed_images


async def test_an_app_that_never_listens_times_out_with_a_hint(node: Node) -> None:
    node.git.push(URL, APP)
    node.runtime.app_behaviour = "silent"
    outcome = failed(await node.deploy())
    assert outcome.stage is Stage.STARTING
    assert outcome.reason.startswith("app did not listen on port 8000 within 0.3 s")
    assert "0.0.0.0:8000" in outcome.reason
    assert node.runtime.containers == {}


async def test_a_failing_health_check_quotes_the_last_answer(node: Node) -> None:
    toml = SHIPWRECK_TOML.replace("port = 8000", 'port = 8000\nhealthcheck = "/health"')
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    node.runtime.app_behaviour = "http-error"
    outcome = failed(await node.deploy())
    assert "health check GET /health did not answer 2xx or 3xx" in outcome.reason
    assert "HTTP 500" in outcome.reason


async def test_an_app_without_port_is_healthy_if_it_keeps_running(node: Node) -> None:
    toml = SHIPWRECK_TOML.replace("port = 8000\n", "")
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    outcome = await node.deploy()
    assert isinstance(outcome, WorkSucceeded)
    assert outcome.url == ""


async def test_a_redelivered_deployment_that_runs_healthy_is_not_rebuilt(node: Node) -> None:
    node.git.push(URL, APP)
    deployment = uuid.uuid4()
    first = await node.deploy(deployment_id=deployment)
    second = await node.deploy(deployment_id=deployment)
    assert isinstance(first, WorkSucceeded)
    assert isinstance(second, WorkSucceeded)
    assert len(node.runtime.builds) == 1
    assert second.container_id == first.container_id
    assert second.commit == first.commit


async def test_a_redelivered_deployment_whose_container_died_is_redone(node: Node) -> None:
    node.git.push(URL, APP)
    deployment = uuid.uuid4()
    first = await node.deploy(deployment_id=deployment)
    assert isinstance(first, WorkSucceeded)
    node.runtime.containers[first.container_id].behaviour = "silent"
    second = await node.deploy(deployment_id=deployment)
    assert isinstance(second, WorkSucceeded)
    assert len(node.runtime.builds) == 2
    assert list(node.runtime.containers) == [second.container_id]


async def test_containers_carry_the_labels_that_find_them_again(node: Node) -> None:
    node.git.push(URL, APP)
    outcome = await node.deploy(attempt=2)
    assert isinstance(outcome, WorkSucceeded)
    labels = node.runtime.containers[outcome.container_id].info.labels
    assert labels["org.shipwreck.app"] == "hello"
    assert labels["org.shipwreck.deployment"] == str(outcome.deployment_id)
    assert labels["org.shipwreck.attempt"] == "2"
    assert labels["org.shipwreck.node"] == str(node.settings.node_id)
    name = node.runtime.containers[outcome.container_id].spec.name
    # A later attempt has a name of its own: an earlier one may run on a node that shares
    # the Docker engine.
    assert name == f"shipwreck-hello-{outcome.deployment_id.hex}-a2"


async def test_limits_are_the_requirements_capped_by_the_node(tmp_path: Path) -> None:
    node = Node(tmp_path, app_memory_limit_mb=128, app_cpus_limit=0.25, app_pids_limit=64)
    node.git.push(URL, APP)
    outcome = await node.deploy()
    assert isinstance(outcome, WorkSucceeded)
    limits = node.runtime.containers[outcome.container_id].spec.limits
    assert (limits.memory_mb, limits.cpus, limits.pids) == (128, 0.25, 64)


async def test_log_lines_are_numbered_from_one_and_secrets_redacted(node: Node) -> None:
    toml = SHIPWRECK_TOML + '\n[env]\nDATABASE_URL = "postgres://u:hunter2hunter2@db/x"\n'
    node.git.push(URL, {**APP, "Shipwreck.toml": toml})
    node.runtime.build_output = ["connecting to postgres://u:hunter2hunter2@db/x\n"]
    outcome = await node.deploy()
    assert isinstance(outcome, WorkSucceeded)
    lines = node.outbox.of(LogLine)
    assert [line.sequence for line in lines] == list(range(1, len(lines) + 1))
    assert "connecting to ***" in node.outbox.lines(LogStream.BUILD)
    assert not any("hunter2" in text for text in node.outbox.lines())
    env = node.runtime.containers[outcome.container_id].spec.env
    assert env == {"DATABASE_URL": "postgres://u:hunter2hunter2@db/x", "PORT": "8000"}
