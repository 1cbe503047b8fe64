"""Redeploys, failures, rollbacks and cancels seen by a client of the app, on real Docker,
Caddy and a git daemon.

A client thread requests the app through Caddy every 20 ms for the whole of each test, the
way users would (``Host: <app>.localhost``, Caddy's port). The node is driven the way its
work queue drives it (the work runner with the real adapters); StopWork for a superseded
deployment is sent as the orchestrator sends it, after the new one reported success.

The fixture app is ``python-version`` (standard library only, answers with its VERSION
file): every variant builds from cached layers in a second or two.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import docker
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
from shipwreck_node.ports import LABEL_APP, LABEL_DEPLOYMENT
from shipwreck_node.probe import NetworkProbe
from shipwreck_node.proxy import CaddyProxy, CaddyRouter
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings
from shipwreck_node.work import WorkRunner
from tests.support.fakes_node import Outbox, deploy_work
from tests.support.gitdaemon import GitServer, app_files, serve_git
from tests.support.node_infra import Hammer, get, remove_node_leftovers, run_caddy

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.anyio]

BASE_PYTHON = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_PYTHON", "shipwreck/base-python:bookworm")
BASE_NODE = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_NODE", "shipwreck/base-node:bookworm")
CA_BUNDLE = os.environ.get("SHIPWRECK_TEST_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
V1, V2 = "v1\n", "v2\n"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
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
        node_name=f"test-zero-{uuid.uuid4().hex[:8]}",
        base_image_python=BASE_PYTHON,
        base_image_node=BASE_NODE,
        pull_base_images=False,
        build_ca_bundle=CA_BUNDLE,
        git_allow_private=True,
        work_dir=str(tmp_path_factory.mktemp("node-work")),
        health_timeout_seconds=30,
        clone_timeout_seconds=60,
        build_timeout_seconds=300,
        stop_timeout_seconds=5,
        proxy_http_port=caddy.http_port,
        proxy_admin=caddy.admin,
        drain_seconds=0.5,
    )
    yield node
    remove_node_leftovers(engine, str(node.node_id))


class Node:
    """The node's work runner over Docker, git and the module's Caddy, with what it sent."""

    def __init__(self, settings: NodeSettings, runtime: DockerRuntime, caddy: CaddyProxy) -> None:
        self.settings = settings
        self.outbox = Outbox()
        self.caddy = caddy
        probe = NetworkProbe()
        self.routes = Routes(settings, runtime, CaddyRouter(caddy), probe)
        pipeline = Pipeline(
            settings,
            git=GitCli(timeout=settings.clone_timeout_seconds),
            runtime=runtime,
            probe=probe,
            routes=self.routes,
            send=self.outbox.send,
        )
        self.runner = WorkRunner(settings, pipeline, runtime, self.outbox.send, routes=self.routes)

    def work(self, app: str, repo_url: str, **changes: object) -> DeployWork:
        return deploy_work(repo_url, app=app, node_id=self.settings.node_id, **changes)  # type: ignore[arg-type]

    async def deploy(self, work: DeployWork) -> WorkSucceeded | WorkFailed:
        await self.runner.handle(work)
        outcome = await self.runner.wait(work.deployment_id)
        assert outcome is not None
        return outcome

    async def live(self, work: DeployWork) -> WorkSucceeded:
        outcome = await self.deploy(work)
        assert isinstance(outcome, WorkSucceeded), outcome
        return outcome

    async def stop(self, outcome: WorkSucceeded, app: str, reason: str = "superseded") -> None:
        await self.runner.handle(
            StopWork(
                deployment_id=outcome.deployment_id,
                app=app,
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
                reason="cancelled by the test",
                requested_at=datetime.now(UTC),
            )
        )
        await self.runner.wait_idle()

    def stages(self, work: DeployWork) -> list[Stage]:
        reports = self.outbox.of(StageReported)
        return [r.stage for r in reports if r.deployment_id == work.deployment_id]

    def lines(self, work: DeployWork, stream: LogStream) -> list[str]:
        return [
            m.text
            for m in self.outbox.of(LogLine)
            if m.deployment_id == work.deployment_id and m.stream is stream
        ]

    def outcomes_of(self, work: DeployWork) -> list[WorkSucceeded | WorkFailed]:
        return [o for o in self.outbox.outcomes if o.deployment_id == work.deployment_id]

    async def upstream(self, app: str) -> str | None:
        return await anyio.to_thread.run_sync(self.caddy.upstream, app)


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
class App:
    """An app with v1 deployed and routed."""

    name: str
    repo: str
    url: str
    v1: WorkSucceeded
    v1_commit: str

    def work(self, node: Node, **changes: object) -> DeployWork:
        return node.work(self.name, self.repo, **changes)


def containers_of(engine: docker.DockerClient, deployment_id: uuid.UUID) -> list[str]:
    label = f"{LABEL_DEPLOYMENT}={deployment_id}"
    return [c.name or "" for c in engine.containers.list(all=True, filters={"label": label})]


def upstream_of(engine: docker.DockerClient, outcome: WorkSucceeded) -> str:
    container = engine.containers.get(outcome.container_id)
    bindings = [b for port in container.ports.values() for b in port or []]
    return f"127.0.0.1:{bindings[0]['HostPort']}"


@pytest.fixture
async def app(node: Node, server: GitServer, engine: docker.DockerClient) -> AsyncIterator[App]:
    name = f"ver-{uuid.uuid4().hex[:6]}"
    commit = server.publish_app(name, "python-version")
    v1 = await node.live(node.work(name, server.url(name)))
    answer = await anyio.to_thread.run_sync(lambda: get(node.settings.proxy_http_port, v1.url))
    assert answer == (200, V1)
    yield App(name, server.url(name), v1.url, v1, commit)
    for container in engine.containers.list(all=True, filters={"label": f"{LABEL_APP}={name}"}):
        container.remove(force=True)


def hammer(node: Node, app: App) -> Hammer:
    return Hammer(node.settings.proxy_http_port, app.url)


# --- (a) a redeploy --------------------------------------------------------------------------


async def test_a_redeploy_switches_versions_without_a_failed_request(
    node: Node, app: App, server: GitServer, engine: docker.DockerClient
) -> None:
    port = node.settings.proxy_http_port
    assert app.url == f"http://{app.name}.localhost:{port}/"
    with hammer(node, app) as client:
        server.publish_app(app.name, "python-version", overrides={"VERSION": V2})
        v2 = await node.live(app.work(node))
        await client.until(client.answered(V2, times=3), "answer from v2")
        # What the orchestrator does next: stop the superseded deployment.
        await node.stop(app.v1, app.name)
        await client.until(client.more(10), "answers after v1 stopped")
    assert client.failures == []
    assert client.bodies == [V1, V2]
    assert len(client.answers) > 20
    assert v2.url == app.url
    assert containers_of(engine, app.v1.deployment_id) == []
    assert await node.upstream(app.name) == upstream_of(engine, v2)


# --- (b) a broken redeploy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "stage"), [("failing test", Stage.TESTING), ("crash", Stage.STARTING)]
)
async def test_a_broken_redeploy_fails_and_the_old_version_keeps_serving(
    node: Node,
    app: App,
    server: GitServer,
    engine: docker.DockerClient,
    breakage: str,
    stage: Stage,
) -> None:
    if breakage == "failing test":
        toml = app_files("python-version")["Shipwreck.toml"]
        assert isinstance(toml, bytes)
        broken = {"Shipwreck.toml": toml + b'test = "echo 1 check failed; exit 1"\n'}
    else:
        broken = {"app.py": b"raise SystemExit('no DATABASE_URL')\n"}
    server.publish_app(app.name, "python-version", overrides={"VERSION": V2, **broken})
    work = app.work(node)
    with hammer(node, app) as client:
        outcome = await node.deploy(work)
        await client.until(client.more(10), "answers after the failure")
    assert isinstance(outcome, WorkFailed)
    assert outcome.stage is stage
    assert client.failures == []
    assert client.bodies == [V1]
    assert containers_of(engine, work.deployment_id) == []
    assert await node.upstream(app.name) == upstream_of(engine, app.v1)


# --- (c) a rollback --------------------------------------------------------------------------


async def test_a_rollback_serves_the_old_image_again_without_a_build(
    node: Node, app: App, server: GitServer, engine: docker.DockerClient
) -> None:
    server.publish_app(app.name, "python-version", overrides={"VERSION": V2})
    v2 = await node.live(app.work(node))
    await node.stop(app.v1, app.name)
    rollback = app.work(node, image=app.v1.image, commit=app.v1_commit)
    with hammer(node, app) as client:
        await client.until(client.answered(V2), "answer from v2")
        back = await node.live(rollback)
        await client.until(client.answered(V1, times=3), "answer from v1 again")
        await node.stop(v2, app.name)
        await client.until(client.more(10), "answers after v2 stopped")
    assert client.failures == []
    assert client.bodies == [V2, V1]
    assert node.stages(rollback) == [Stage.STARTING]
    assert node.lines(rollback, LogStream.BUILD) == []
    assert back.commit == app.v1_commit
    assert back.image == image_tag(rollback)
    image = engine.containers.get(back.container_id).image
    assert image is not None
    assert image.id == engine.images.get(app.v1.image).id


# --- a deployment placed again after its node was lost ----------------------------------------


async def test_a_deployment_placed_again_runs_the_image_its_lost_node_built(
    node: Node,
    settings: NodeSettings,
    runtime: DockerRuntime,
    server: GitServer,
    tmp_path: Path,
    engine: docker.DockerClient,
) -> None:
    # B: a node of its own, with its own Caddy, on the Docker engine the module's node
    # (A) uses too, as nodes on one machine in the tests and the benches do.
    b_settings = msgspec.structs.replace(settings, node_name=f"{settings.node_name}-lost")
    name = f"moved-{uuid.uuid4().hex[:6]}"
    commit = server.publish_app(name, "python-version")
    try:
        with run_caddy(tmp_path / "caddy-b") as own:
            b = Node(
                msgspec.structs.replace(
                    b_settings, proxy_http_port=own.http_port, proxy_admin=own.admin
                ),
                runtime,
                own,
            )
            first = await b.live(b.work(name, server.url(name)))
            built = engine.images.get(first.image).id
            await b.runner.close()
            # B's machine dies: its app with it (its Caddy goes as the block ends).
            engine.containers.get(first.container_id).remove(force=True)
        # What the orchestrator sends A: the next attempt, with the image B reported.
        moved = node.work(
            name,
            server.url(name),
            deployment_id=first.deployment_id,
            attempt=2,
            image=first.image,
            commit=commit,
        )
        outcome = await node.live(moved)
        assert node.stages(moved) == [Stage.STARTING]
        assert node.lines(moved, LogStream.BUILD) == []
        system = node.lines(moved, LogStream.SYSTEM)
        assert f"running its image {first.image} again (commit {commit}): no build" in system
        assert (outcome.image, outcome.commit) == (first.image, commit)
        container = engine.containers.get(outcome.container_id)
        assert container.image is not None
        assert container.image.id == built
        answer = await anyio.to_thread.run_sync(lambda: get(settings.proxy_http_port, outcome.url))
        assert answer == (200, V1)
    finally:
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL_APP}={name}"}):
            container.remove(force=True)
        remove_node_leftovers(engine, str(b_settings.node_id))


# --- (d) cancels -----------------------------------------------------------------------------


class Tarpit:
    """A TCP server that accepts connections and never answers: a clone that hangs."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.connected = threading.Event()
        self.hung_up = threading.Event()
        threading.Thread(target=self._serve, name="tarpit", daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.socket.accept()
            self.connected.set()
            with connection:
                while connection.recv(4096):
                    pass  # git's request: never answered
            self.hung_up.set()

    def close(self) -> None:
        self.socket.close()


SLOW_PACKAGE = '{"name": "slow", "version": "1.0.0", "scripts": {"preinstall": "sleep 600"}}\n'


@pytest.mark.parametrize("stage", [Stage.CLONING, Stage.BUILDING, Stage.STARTING])
async def test_a_cancelled_redeploy_leaves_nothing_and_the_old_version_serving(
    node: Node, app: App, server: GitServer, engine: docker.DockerClient, stage: Stage
) -> None:
    tarpit = Tarpit()
    if stage is Stage.CLONING:
        # A pinned commit: the node goes straight to the fetch, which hangs.
        work = node.work(app.name, f"git://127.0.0.1:{tarpit.port}/slow.git", commit=app.v1_commit)
    elif stage is Stage.BUILDING:
        repo = f"{app.name}-slow-build"
        server.publish_app(repo, "node-hello", overrides={"package.json": SLOW_PACKAGE})
        work = node.work(app.name, server.url(repo))
    else:
        toml = app_files("python-version")["Shipwreck.toml"]
        assert isinstance(toml, bytes)
        slow = toml.replace(b'run = "python3 app.py"', b'run = "sleep 600; python3 app.py"')
        server.publish_app(app.name, "python-version", overrides={"Shipwreck.toml": slow})
        work = app.work(node)

    def under_way() -> bool:
        if stage is Stage.BUILDING:
            # The npm install step runs (in its own container): the build is busy.
            build = node.lines(work, LogStream.BUILD)
            steps = [i for i, line in enumerate(build) if "npm install" in line and "RUN" in line]
            return bool(steps) and any("Running in" in line for line in build[steps[0] :])
        wanted = "cloning" if stage is Stage.CLONING else "started container"
        return any(line.startswith(wanted) for line in node.lines(work, LogStream.SYSTEM))

    try:
        with hammer(node, app) as client:
            await node.runner.handle(work)
            with anyio.fail_after(120):
                await node.outbox.wait_until(under_way)
            if stage is Stage.CLONING:
                # git reached the server (and waits for an answer that never comes).
                assert await anyio.to_thread.run_sync(lambda: tarpit.connected.wait(30))
            assert node.stages(work)[-1] is stage
            await node.cancel(work)
            await client.until(client.more(10), "answers after the cancel")
        if stage is Stage.CLONING:
            # The git process was killed, not left hanging.
            assert await anyio.to_thread.run_sync(lambda: tarpit.hung_up.wait(10))
    finally:
        tarpit.close()
    assert client.failures == []
    assert client.bodies == [V1]
    assert node.outcomes_of(work) == []
    assert containers_of(engine, work.deployment_id) == []
    assert not engine.images.list(name=image_tag(work))
    assert await node.upstream(app.name) == upstream_of(engine, app.v1)


# --- (e) image retention ---------------------------------------------------------------------


async def test_the_images_of_the_last_five_deployments_are_kept(
    node: Node, server: GitServer, engine: docker.DockerClient
) -> None:
    name = f"keep-{uuid.uuid4().hex[:6]}"
    # python-hello: its dependency stage (humanize) is tagged with each deployment.
    server.publish_app(name, "python-hello")
    done: list[WorkSucceeded] = []
    for _ in range(7):
        done.append(await node.live(node.work(name, server.url(name))))
        if len(done) > 1:
            await node.stop(done[-2], name)
    kept = {str(d.deployment_id) for d in done[-5:]}

    def tags(repository: str) -> set[str]:
        # The dependency image is shared: other apps' tags may name it too.
        names = [t for image in engine.images.list(name=repository) for t in image.tags]
        return {t.rpartition(":")[2] for t in names if t.rpartition(":")[0] == repository}

    assert tags(f"shipwreck/app-{name}") == kept
    assert tags(f"shipwreck/deps-{name}") == kept


# --- a restart -------------------------------------------------------------------------------


async def test_a_restarted_node_and_caddy_serve_the_apps_again(
    settings: NodeSettings,
    runtime: DockerRuntime,
    server: GitServer,
    tmp_path: Path,
    engine: docker.DockerClient,
) -> None:
    # A node of its own: its restart must not touch the other tests' apps.
    own_settings = msgspec.structs.replace(settings, node_name=f"{settings.node_name}-restart")
    name = f"back-{uuid.uuid4().hex[:6]}"
    server.publish_app(name, "python-version")
    try:
        with run_caddy(tmp_path / "caddy") as own:
            before = Node(
                msgspec.structs.replace(
                    own_settings, proxy_http_port=own.http_port, proxy_admin=own.admin
                ),
                runtime,
                own,
            )
            v1 = await before.live(before.work(name, server.url(name)))
            await before.runner.close()
            # The node process goes (its app keeps running), and its Caddy with it.
        with run_caddy(tmp_path / "caddy-again") as fresh:
            after = Node(
                msgspec.structs.replace(
                    own_settings, proxy_http_port=fresh.http_port, proxy_admin=fresh.admin
                ),
                runtime,
                fresh,
            )
            assert fresh.upstream(name) is None
            await after.runner.recover()
            url = v1.url.replace(f":{own.http_port}/", f":{fresh.http_port}/")
            assert await anyio.to_thread.run_sync(lambda: get(fresh.http_port, url)) == (200, V1)
            await after.stop(v1, name, "app stopped")
            assert fresh.upstream(name) is None
        assert containers_of(engine, v1.deployment_id) == []
    finally:
        remove_node_leftovers(engine, str(own_settings.node_id))
