"""Deployments on a real node: git daemon on 127.0.0.1, Docker Engine, real PyPI and npm.

Each deployment goes through the node's work runner with the real adapters (and a Caddy of
the module's own), exactly as the node process runs it, minus the broker
(tests/integration/test_node_app.py covers that).
The base images are the local ones built by `just images`; dependency installs go through
the host's CA bundle (registries sit behind a TLS-intercepting proxy here).

Builds are the cost: the fixture apps are tiny, the failing ones reuse the good apps'
dependency files (so their dependency layer comes from Docker's cache), and the good
deployments are made once per module.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import anyio.to_thread
import docker
import docker.errors
import msgspec
import pytest

from shipwreck_contracts import (
    CancelWork,
    DeployWork,
    LogLine,
    LogStream,
    Stage,
    StageReported,
    StopWork,
    WorkFailed,
    WorkSucceeded,
)
from shipwreck_node.dockerruntime import DockerRuntime
from shipwreck_node.gitcli import GitCli
from shipwreck_node.images import image_tag
from shipwreck_node.pipeline import Pipeline
from shipwreck_node.ports import LABEL_DEPLOYMENT, LABEL_NODE
from shipwreck_node.probe import NetworkProbe
from shipwreck_node.proxy import CaddyProxy, CaddyRouter
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from shipwreck_node.work import WorkRunner
from tests.support.fakes_node import Outbox, deploy_work
from tests.support.gitdaemon import GitServer, Symlink, app_files, free_port, serve_git
from tests.support.node_infra import get, remove_node_leftovers, run_caddy

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.anyio]

BASE_PYTHON = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_PYTHON", "shipwreck/base-python:bookworm")
BASE_NODE = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_NODE", "shipwreck/base-node:bookworm")
CA_BUNDLE = os.environ.get("SHIPWRECK_TEST_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
PYTHON_BODY = "hello from shipwreck: 1,234,567 users\n"
NODE_BODY = "node says: a minute is 1m, a day is 1 day\n"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module-wide, so that the deployments made once per module live on one event loop.
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    with serve_git(tmp_path_factory.mktemp("git")) as git_server:
        yield git_server


@pytest.fixture(scope="module")
def caddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaddyProxy]:
    with run_caddy(tmp_path_factory.mktemp("caddy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient, caddy: CaddyProxy
) -> Iterator[NodeSettings]:
    node = NodeSettings(
        proxy_http_port=caddy.http_port,
        proxy_admin=caddy.admin,
        proxy_dns_port=caddy.dns.port,
        drain_seconds=0.2,
        node_name=f"test-node-{uuid.uuid4().hex[:8]}",
        base_image_python=BASE_PYTHON,
        base_image_node=BASE_NODE,
        build_ca_bundle=CA_BUNDLE,
        git_allow_private=True,
        work_dir=str(tmp_path_factory.mktemp("node-work")),
        health_timeout_seconds=30,
        clone_timeout_seconds=30,
        build_timeout_seconds=300,
        test_timeout_seconds=120,
        stop_timeout_seconds=5,
    )
    yield node
    # Whatever a failed assertion left behind goes, by the node's label.
    remove_node_leftovers(engine, str(node.node_id))


class Node:
    """A node's work runner over the real adapters, with what it sent."""

    def __init__(
        self, settings: NodeSettings, runtime: DockerRuntime, caddy: CaddyProxy, **changes: object
    ) -> None:
        self.settings = msgspec.structs.replace(settings, **changes)
        self.outbox = Outbox()
        self.runtime = runtime
        # The module's Caddy and the unbound beside it, whose routes this object keeps.
        router = CaddyRouter(caddy)
        probe = NetworkProbe()
        routes = Routes(self.settings, runtime, router, probe)
        pipeline = Pipeline(
            self.settings,
            git=GitCli(timeout=self.settings.clone_timeout_seconds),
            runtime=runtime,
            probe=probe,
            routes=routes,
            send=self.outbox.send,
        )
        self.runner = WorkRunner(self.settings, pipeline, runtime, self.outbox.send, routes=routes)

    async def get(self, url: str) -> tuple[int, str]:
        """GET ``url`` through the node's Caddy."""
        port = self.settings.proxy_http_port
        return await anyio.to_thread.run_sync(lambda: get(port, url))

    def work(self, url: str, **changes: object) -> DeployWork:
        return deploy_work(url, node_id=self.settings.node_id, **changes)  # type: ignore[arg-type]

    async def deploy(self, work: DeployWork) -> WorkSucceeded | WorkFailed:
        await self.runner.handle(work)
        outcome = await self.runner.wait(work.deployment_id)
        assert outcome is not None
        return outcome

    async def fail(self, url: str, **changes: object) -> WorkFailed:
        outcome = await self.deploy(self.work(url, **changes))
        assert isinstance(outcome, WorkFailed), outcome
        return outcome

    def stages(self, work: DeployWork) -> list[Stage]:
        reports = self.outbox.of(StageReported)
        return [r.stage for r in reports if r.deployment_id == work.deployment_id]

    def lines(self, work: DeployWork, stream: LogStream) -> list[str]:
        return [
            m.text
            for m in self.outbox.of(LogLine)
            if m.deployment_id == work.deployment_id and m.stream is stream
        ]


def containers_of(engine: docker.DockerClient, deployment_id: uuid.UUID) -> list[str]:
    """Names of every container (running or not) labelled with the deployment."""
    label = f"{LABEL_DEPLOYMENT}={deployment_id}"
    return [c.name or "" for c in engine.containers.list(all=True, filters={"label": label})]


@pytest.fixture(scope="module")
async def runtime() -> DockerRuntime:
    return DockerRuntime.from_env()


@pytest.fixture(scope="module")
async def node(
    settings: NodeSettings, runtime: DockerRuntime, caddy: CaddyProxy
) -> AsyncIterator[Node]:
    shared = Node(settings, runtime, caddy)
    yield shared
    await shared.runner.close()


@dataclass
class Deployed:
    work: DeployWork
    outcome: WorkSucceeded
    commit: str


@pytest.fixture(scope="module")
async def python_app(node: Node, server: GitServer) -> Deployed:
    commit = server.publish_app("python-hello", "python-hello")
    work = node.work(server.url("python-hello"), app="python-hello")
    outcome = await node.deploy(work)
    assert isinstance(outcome, WorkSucceeded), outcome
    return Deployed(work, outcome, commit)


@pytest.fixture(scope="module")
async def node_app(node: Node, server: GitServer) -> Deployed:
    commit = server.publish_app("node-hello", "node-hello")
    work = node.work(server.url("node-hello"), app="node-hello")
    outcome = await node.deploy(work)
    assert isinstance(outcome, WorkSucceeded), outcome
    return Deployed(work, outcome, commit)


# --- apps that work -----------------------------------------------------------------------


async def test_a_python_app_with_a_pypi_dependency_answers_at_its_url(
    python_app: Deployed, node: Node
) -> None:
    assert python_app.outcome.commit == python_app.commit
    port = node.settings.proxy_http_port
    assert python_app.outcome.url == f"http://python-hello.localhost:{port}/"
    assert await node.get(python_app.outcome.url) == (200, PYTHON_BODY)
    assert node.stages(python_app.work) == [Stage.CLONING, Stage.BUILDING, Stage.STARTING]
    # The body proves humanize is installed; the step shows up whether or not it was cached.
    build = node.lines(python_app.work, LogStream.BUILD)
    assert any("pip install" in line and line.startswith("Step ") for line in build)


async def test_a_node_app_with_an_npm_dependency_answers_at_its_url(
    node_app: Deployed, node: Node
) -> None:
    assert await node.get(node_app.outcome.url) == (200, NODE_BODY)
    assert node_app.outcome.image == image_tag(node_app.work)
    build = node.lines(node_app.work, LogStream.BUILD)
    assert any("npm install" in line and line.startswith("Step ") for line in build)


async def test_the_app_output_flows_as_log_lines(python_app: Deployed, node: Node) -> None:
    await node.get(python_app.outcome.url + "visits")
    with anyio.fail_after(10):
        await node.outbox.wait_until(
            lambda: any(
                "GET /visits" in line for line in node.lines(python_app.work, LogStream.STDOUT)
            )
        )
    assert "listening on 0.0.0.0:8000" in node.lines(python_app.work, LogStream.STDOUT)
    lines = [m for m in node.outbox.of(LogLine) if m.deployment_id == python_app.work.deployment_id]
    assert [m.sequence for m in lines] == list(range(1, len(lines) + 1))


async def test_the_container_is_labelled_limited_and_on_loopback_only(
    python_app: Deployed, engine: docker.DockerClient, settings: NodeSettings
) -> None:
    container = engine.containers.get(python_app.outcome.container_id)
    labels = container.labels
    assert labels["org.shipwreck.app"] == "python-hello"
    assert labels["org.shipwreck.deployment"] == str(python_app.work.deployment_id)
    assert labels["org.shipwreck.attempt"] == "1"
    assert labels["org.shipwreck.node"] == str(settings.node_id)
    assert container.name == f"shipwreck-python-hello-{python_app.work.deployment_id.hex}"
    host = container.attrs["HostConfig"]
    assert host["Init"] is True
    assert host["Memory"] == 256 * 1024 * 1024  # the deployment's requirement, under the cap
    assert host["PidsLimit"] == settings.app_pids_limit
    assert host["RestartPolicy"]["Name"] == "always"
    bindings = [b for port in container.ports.values() for b in port or []]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}


async def test_the_image_gets_every_label_in_one_build_step_and_its_manifest_verbatim(
    node: Node, server: GitServer, engine: docker.DockerClient, settings: NodeSettings
) -> None:
    toml = app_files("python-version")["Shipwreck.toml"]
    assert isinstance(toml, bytes)
    # Quotes, a dollar sign and a backslash: none of it may be expanded or unescaped.
    toml += b'\n[env-vars]\nODD = "it\'s $HOME ${PATH} \\\\ end"\n'
    commit = server.publish_app(
        "python-labels", "python-version", overrides={"Shipwreck.toml": toml}
    )
    work = node.work(server.url("python-labels"), app="python-labels")
    outcome = await node.deploy(work)
    assert isinstance(outcome, WorkSucceeded), outcome
    image = engine.images.get(outcome.image)
    labels = image.labels
    assert labels["org.shipwreck.manifest"] == toml.decode()
    assert labels["org.shipwreck.manifest-file"] == "Shipwreck.toml"
    assert labels["org.shipwreck.commit"] == commit
    assert labels["org.shipwreck.deployment"] == str(work.deployment_id)
    assert labels["org.shipwreck.node"] == str(settings.node_id)
    steps = [line for line in node.lines(work, LogStream.BUILD) if line.startswith("Step ")]
    assert len([step for step in steps if " : LABEL " in step]) == 1
    env = image.attrs["Config"]["Env"] or []
    assert not [variable for variable in env if variable.startswith("SHIPWRECK_LABEL_")]
    container = engine.containers.get(outcome.container_id)
    assert "ODD=it's $HOME ${PATH} \\ end" in container.attrs["Config"]["Env"]


async def test_the_ca_bundle_does_not_reach_the_app_image(
    python_app: Deployed, engine: docker.DockerClient, settings: NodeSettings
) -> None:
    output = engine.containers.run(
        python_app.outcome.image,
        ["sh", "-c", "ls /tmp; env"],
        remove=True,
        labels={LABEL_NODE: str(settings.node_id)},
    )
    assert b"shipwreck-build-ca" not in output
    assert b"PIP_CERT" not in output


async def test_redelivered_work_for_a_healthy_deployment_is_not_rebuilt(
    python_app: Deployed, node: Node
) -> None:
    outcome = await node.deploy(python_app.work)
    assert isinstance(outcome, WorkSucceeded)
    assert outcome.container_id == python_app.outcome.container_id
    assert outcome.url == python_app.outcome.url
    assert node.stages(python_app.work) == [Stage.CLONING, Stage.BUILDING, Stage.STARTING]


async def test_stop_removes_the_app_and_its_route(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    server.publish_app("python-stop", "python-hello")
    work = node.work(server.url("python-stop"), app="python-stop")
    outcome = await node.deploy(work)
    assert isinstance(outcome, WorkSucceeded)
    assert work.deployment_id in await node.runner.running()
    await node.runner.handle(
        StopWork(
            deployment_id=work.deployment_id,
            app=work.app,
            node_id=work.node_id,
            reason="superseded",
            requested_at=work.requested_at,
        )
    )
    await node.runner.wait_idle()
    assert containers_of(engine, work.deployment_id) == []
    assert work.deployment_id not in await node.runner.running()
    status, body = await node.get(outcome.url)
    assert status == 404
    assert "No Shipwreck app is deployed at python-stop.localhost" in body


# --- apps that fail: a reason someone can act on, and nothing left running ------------------


async def test_no_manifest(node: Node, server: GitServer, engine: docker.DockerClient) -> None:
    commit = server.publish_app("no-manifest", "python-hello", remove=("Shipwreck.toml",))
    outcome = await node.fail(server.url("no-manifest"))
    assert outcome.stage is Stage.CLONING
    assert outcome.reason.startswith(f"no Shipwreck.toml in {server.url('no-manifest')}@{commit}")
    assert outcome.commit == commit
    assert containers_of(engine, outcome.deployment_id) == []


async def test_invalid_manifest(node: Node, server: GitServer) -> None:
    toml = '[app]\nname = "Bad_Name"\n[config]\nlang = "python3"\nrun = "x"\nport = "eighty"\n'
    server.publish_app("bad-manifest", "python-hello", overrides={"Shipwreck.toml": toml})
    outcome = await node.fail(server.url("bad-manifest"))
    assert outcome.stage is Stage.CLONING
    assert 'Shipwreck.toml: app.name: "Bad_Name" is not a valid app name' in outcome.reason
    assert "Shipwreck.toml: config.port: is a string, not an integer" in outcome.reason


async def test_unknown_language(node: Node, server: GitServer) -> None:
    toml = '[app]\nname = "rubyist"\n[config]\nlang = "ruby"\nrun = "ruby app.rb"\n'
    server.publish_app("ruby-app", "python-hello", overrides={"Shipwreck.toml": toml})
    outcome = await node.fail(server.url("ruby-app"))
    assert outcome.stage is Stage.CLONING
    assert 'config.lang: "ruby" is not a supported language; allowed: one of node, python' in (
        outcome.reason
    )


async def test_a_symlinked_manifest_is_refused(node: Node, server: GitServer) -> None:
    server.publish("symlink-app", {"Shipwreck.toml": Symlink("/etc/passwd")})
    outcome = await node.fail(server.url("symlink-app"))
    assert outcome.stage is Stage.CLONING
    assert "Shipwreck.toml is a symbolic link" in outcome.reason


async def test_a_dependency_that_does_not_exist(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    requirements = "humanize==4.9.0\nshipwreck-no-such-package-4d1e==1.0\n"
    server.publish_app("bad-deps", "python-hello", overrides={"requirements.txt": requirements})
    outcome = await node.fail(server.url("bad-deps"))
    assert outcome.stage is Stage.BUILDING
    assert outcome.reason.startswith("installing the Python dependencies from requirements.txt")
    assert "shipwreck-no-such-package-4d1e" in outcome.reason
    assert containers_of(engine, outcome.deployment_id) == []
    label = f"{LABEL_DEPLOYMENT}={outcome.deployment_id}"
    assert engine.images.list(filters={"label": label}) == []


async def test_a_failing_test_command_blocks_the_rollout(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    toml = (
        '[app]\nname = "python-hello"\n[config]\nlang = "python3"\nrun = "python3 app.py"\n'
        'port = 8000\ntest = "python3 -c \\"print(\'2 checks failed\'); raise SystemExit(3)\\""\n'
    )
    server.publish_app("failing-test", "python-hello", overrides={"Shipwreck.toml": toml})
    work = node.work(server.url("failing-test"))
    outcome = await node.deploy(work)
    assert isinstance(outcome, WorkFailed)
    assert outcome.stage is Stage.TESTING
    assert outcome.reason.startswith("test command `python3 -c")
    assert "exited 3" in outcome.reason
    assert "2 checks failed" in outcome.reason
    assert node.stages(work) == [Stage.CLONING, Stage.BUILDING, Stage.TESTING]
    assert containers_of(engine, work.deployment_id) == []


async def test_an_app_that_crashes_at_start(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    crash = "import sys\nprint('starting', flush=True)\nsys.exit('DATABASE_URL is not set')\n"
    server.publish_app("crasher", "python-hello", overrides={"app.py": crash})
    outcome = await node.fail(server.url("crasher"))
    assert outcome.stage is Stage.STARTING
    assert outcome.reason.startswith("app crashed at start: exited 1: ")
    assert "DATABASE_URL is not set" in outcome.reason
    assert containers_of(engine, outcome.deployment_id) == []


async def test_an_app_that_never_listens_on_its_port(
    settings: NodeSettings,
    runtime: DockerRuntime,
    caddy: CaddyProxy,
    server: GitServer,
    engine: docker.DockerClient,
) -> None:
    impatient = Node(settings, runtime, caddy, health_timeout_seconds=3)
    # The classic mistake: listening on the container's own loopback only.
    source = app_files("python-hello")["app.py"]
    assert isinstance(source, bytes)
    deaf = source.replace(b'("0.0.0.0", port)', b'("127.0.0.1", port)')
    server.publish_app("deaf", "python-hello", overrides={"app.py": deaf})
    outcome = await impatient.fail(server.url("deaf"))
    assert outcome.stage is Stage.STARTING
    assert outcome.reason.startswith("app did not listen on port 8000 within 3 s")
    assert "listen on 0.0.0.0:8000" in outcome.reason
    assert containers_of(engine, outcome.deployment_id) == []


async def test_an_unreachable_repository(node: Node) -> None:
    outcome = await node.fail(f"git://127.0.0.1:{free_port()}/gone.git")
    assert outcome.stage is Stage.CLONING
    assert outcome.reason.startswith("cannot reach the repository:")
    assert "refused" in outcome.reason


async def test_an_unknown_branch(node: Node, server: GitServer) -> None:
    server.publish_app("one-branch", "python-hello")
    outcome = await node.fail(server.url("one-branch"), branch="release/2.0")
    assert outcome.stage is Stage.CLONING
    assert "branch 'release/2.0' does not exist in" in outcome.reason


async def test_a_private_remote_is_refused_without_a_connection(
    settings: NodeSettings, runtime: DockerRuntime, caddy: CaddyProxy, server: GitServer
) -> None:
    strict = Node(settings, runtime, caddy, git_allow_private=False)
    server.publish_app("private", "python-hello")
    before = len(server.connections)
    outcome = await strict.fail(server.url("private"))
    assert "is a loopback address" in outcome.reason
    assert "SHIPWRECK_GIT_ALLOW_PRIVATE=true" in outcome.reason
    assert len(server.connections) == before


async def test_a_missing_base_image_that_cannot_be_pulled(
    settings: NodeSettings, runtime: DockerRuntime, caddy: CaddyProxy, server: GitServer
) -> None:
    # A registry on a loopback port where nothing listens: the pull fails without leaving
    # the machine.
    missing = f"127.0.0.1:{free_port()}/shipwreck/base-python:missing"
    node = Node(settings, runtime, caddy, base_image_python=missing)
    server.publish_app("no-base", "python-hello")
    outcome = await node.fail(server.url("no-base"))
    assert outcome.stage is Stage.BUILDING
    assert f"the base image {missing} (SHIPWRECK_BASE_IMAGE_PYTHON)" in outcome.reason
    assert "cannot be pulled" in outcome.reason
    assert "`just images`" in outcome.reason


# --- cancellation -------------------------------------------------------------------------


async def test_cancel_during_the_build_aborts_it_on_the_daemon(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    package = (
        '{"name": "slow", "version": "1.0.0", "scripts": {"preinstall": "sleep 600"}, '
        '"dependencies": {"ms": "2.1.3"}}\n'
    )
    server.publish_app("slow-build", "node-hello", overrides={"package.json": package})
    work = node.work(server.url("slow-build"), app="slow-build")
    await node.runner.handle(work)

    def install_step_started() -> str | None:
        lines = node.lines(work, LogStream.BUILD)
        steps = [i for i, line in enumerate(lines) if "npm install" in line and "RUN" in line]
        running = [line for line in lines[steps[0] :] if "Running in" in line] if steps else []
        return running[0].split()[-1] if running else None

    with anyio.fail_after(120):
        await node.outbox.wait_until(lambda: install_step_started() is not None)
    step_container = install_step_started()
    assert step_container is not None
    await node.runner.handle(
        CancelWork(
            deployment_id=work.deployment_id,
            node_id=work.node_id,
            reason="changed my mind",
            requested_at=work.requested_at,
        )
    )
    await node.runner.wait_idle()
    assert (
        node.lines(work, LogStream.SYSTEM)[-1]
        == "cancelled: changed my mind (0 containers removed)"
    )
    outcomes = node.outbox.of(WorkFailed) + node.outbox.of(WorkSucceeded)
    assert [m for m in outcomes if m.deployment_id == work.deployment_id] == []

    def removed() -> None:
        with contextlib.suppress(docker.errors.NotFound):  # already gone
            engine.api.wait(step_container, condition="removed", timeout=30)

    # The daemon abandons the build when the node hangs up, and removes the step's container.
    await anyio.to_thread.run_sync(removed)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(step_container)


async def test_cancel_during_the_tests_removes_the_test_container(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    toml = (
        '[app]\nname = "slow-test"\n[config]\nlang = "python3"\nrun = "python3 app.py"\n'
        'port = 8000\ntest = "echo tests started; sleep 600"\n'
    )
    server.publish_app("slow-test", "python-hello", overrides={"Shipwreck.toml": toml})
    work = node.work(server.url("slow-test"), app="slow-test")
    await node.runner.handle(work)
    with anyio.fail_after(120):
        await node.outbox.wait_until(lambda: "tests started" in node.lines(work, LogStream.TEST))
    assert len(containers_of(engine, work.deployment_id)) == 1
    await node.runner.handle(
        CancelWork(
            deployment_id=work.deployment_id,
            node_id=work.node_id,
            requested_at=work.requested_at,
        )
    )
    await node.runner.wait_idle()
    assert containers_of(engine, work.deployment_id) == []
