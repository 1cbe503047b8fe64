"""A node brought back in line with what it should run: after a restart, and after it was
declared lost and comes back. Every service as its own process, on real RabbitMQ,
PostgreSQL, Docker, Caddy and a git daemon; the app is requested through the node's proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import pytest

from shipwreck_contracts import (
    NodeAssignment,
    NodeRegistered,
    Stage,
    StageReported,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
)
from shipwreck_messaging import (
    create_broker,
    declare_route,
    events_exchange,
    node_work_route,
    publish,
)
from shipwreck_node.ports import LABEL_APP, LABEL_DEPLOYMENT, LABEL_NODE, LABEL_PORT, LABEL_ROLE
from shipwreck_node.proxy import CaddyProxy
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import load_settings
from tests.e2e.test_deploy_git_url import Api, _get, node_settings, start_api, wait_for_nodes
from tests.support.gitdaemon import GitServer, app_files
from tests.support.node_infra import stop_node_proxy
from tests.support.platform import Platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

HELLO = "hello from shipwreck: 1,234,567 users\n"
DEPLOYMENT = "id app status node attempt url commit events { sequence type }"


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def _unique(name: str) -> str:
    # A node removes every container labelled with its id that it is not assigned: a name
    # (hence an id) of its own keeps it off the nodes of tests running beside this one.
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _until(condition: Callable[[], bool], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {seconds:g} s")
        time.sleep(0.3)


def _deployment(api: Api, deployment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.gql(
        f"query($id: ID!) {{ deployment(id: $id) {{ {DEPLOYMENT} }} }}", id=deployment_id
    )["deployment"]
    return found


def _logs(api: Api, deployment_id: str) -> list[tuple[int, str]]:
    lines = api.gql(
        "query($id: ID!) { deployment(id: $id) { logs { sequence text } } }", id=deployment_id
    )["deployment"]["logs"]
    return [(line["sequence"], line["text"]) for line in lines]


def _serves(url: str, body: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return _get(url) == (200, body)
        except OSError:
            return False

    return check


def _gone(engine: docker.DockerClient, container_id: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            engine.containers.get(container_id)
        except docker.errors.NotFound:
            return True
        return False

    return check


def _containers(engine: docker.DockerClient, **labels: str) -> list[Any]:
    filters: dict[str, str | list[str] | bool] = {"label": [f"{k}={v}" for k, v in labels.items()]}
    # ignore_removed: one may go between the listing and its inspection (that is the point).
    return list(engine.containers.list(all=True, filters=filters, ignore_removed=True))


def test_a_restarted_node_serves_its_removed_app_again_and_removes_a_stray(
    platform: Platform, git_server: GitServer, engine: docker.DockerClient
) -> None:
    settings = node_settings(platform, _unique("restart"))
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        platform.start("node", "shipwreck_node", "node ready", **settings)
        node_id = platform.node_ids[-1]
        api = start_api(platform)
    wait_for_nodes(api, 1)
    git_server.publish_app("hello", "python-hello")
    deployment_id = api.deploy(git_server.url("hello"))
    assert api.wait_terminal(deployment_id)["status"] == "RUNNING", platform.log_tail("node")
    d = _deployment(api, deployment_id)
    _until(_serves(d["url"], HELLO), "served")
    _until(lambda: any("listening" in text for _, text in _logs(api, d["id"])), "logged")
    before = _logs(api, d["id"])

    platform.stop("node")  # its app keeps running; its Caddy goes with it
    (app,) = _containers(engine, **{LABEL_DEPLOYMENT: d["id"]})
    app.remove(force=True)  # by hand, while the node is down
    stray = engine.containers.run(
        "shipwreck/base-python:bookworm",
        ["python3", "-m", "http.server", "8000"],
        name=f"shipwreck-stray-{uuid.uuid4().hex[:8]}",
        detach=True,
        labels={
            LABEL_NODE: node_id,
            LABEL_APP: "stray",
            LABEL_DEPLOYMENT: str(uuid.uuid4()),
            LABEL_ROLE: "app",
            LABEL_PORT: "8000",
        },
        ports={"8000/tcp": ("127.0.0.1", None)},
        # Healthy by the node's own measure: it would keep it, and route it, at start-up.
        restart_policy={"Name": "always"},
    )

    platform.start("node-again", "shipwreck_node", "node ready", **settings)
    _until(_serves(d["url"], HELLO), "served again")
    _until(_gone(engine, stray.id or ""), "the stray removed")
    proxy = CaddyProxy(
        admin=settings["SHIPWRECK_PROXY_ADMIN"],
        http_port=int(settings["SHIPWRECK_PROXY_HTTP_PORT"]),
        state_dir=load_settings(NodeSettings, settings).proxy_dir,
    )
    assert proxy.upstream("stray") is None
    assert "stray" not in proxy.routes()
    (revived,) = _containers(engine, **{LABEL_DEPLOYMENT: d["id"]})
    assert revived.id != app.id
    after = _deployment(api, d["id"])
    # It stayed RUNNING, on its node, at its attempt: the node put it back on its own.
    assert (after["status"], after["node"], after["attempt"]) == ("RUNNING", node_id, 1)
    assert len(after["events"]) == len(d["events"])

    # Its output is followed again, numbered after everything logged before the restart.
    _until(
        lambda: sum("listening on" in t for _, t in _logs(api, d["id"])) == 2,
        "the revived container's output logged",
        60,
    )
    lines = _logs(api, d["id"])
    new = lines[len(before) :]
    assert lines[: len(before)] == before
    assert min(s for s, _ in new) > max(s for s, _ in before)


def test_a_lost_node_that_returns_removes_the_container_it_no_longer_owns(
    platform: Platform, git_server: GitServer, engine: docker.DockerClient
) -> None:
    with platform.concurrently():
        platform.start(
            "scheduler",
            "shipwreck_scheduler",
            "scheduler ready",
            SHIPWRECK_NODE_TIMEOUT_SECONDS="5",
        )
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        platform.start(
            "node-1", "shipwreck_node", "node ready", **node_settings(platform, _unique("lost-1"))
        )
        api = start_api(platform)
    wait_for_nodes(api, 1)
    app = _unique("moving")
    git_server.publish_app(app, "python-hello")
    deployment_id = api.deploy(git_server.url(app))
    assert api.wait_terminal(deployment_id)["status"] == "RUNNING", platform.log_tail("node-1")
    d = _deployment(api, deployment_id)
    first = platform.node_ids[0]
    assert d["node"] == first
    platform.start(
        "node-2", "shipwreck_node", "node ready", **node_settings(platform, _unique("lost-2"))
    )
    second = platform.node_ids[1]
    wait_for_nodes(api, 2)

    # node-1 stops answering (a network partition, as far as the others can tell): it is
    # declared lost and its deployment is placed on node-2 with the next attempt.
    node_1 = platform.processes["node-1"]
    os.kill(node_1.pid, signal.SIGSTOP)
    try:
        _until(
            lambda: (
                (_deployment(api, d["id"])["node"], _deployment(api, d["id"])["status"])
                == (second, "RUNNING")
            ),
            "moved to node-2",
            300,
        )
    finally:
        os.kill(node_1.pid, signal.SIGCONT)
    moved = _deployment(api, d["id"])
    assert moved["attempt"] == 2
    assert _serves(moved["url"], HELLO)()

    # node-1 is heard from again: it removes its container of the deployment.
    def one_container() -> bool:
        return [c.labels[LABEL_NODE] for c in _containers(engine, **{LABEL_APP: app})] == [second]

    _until(one_container, "node-1's old container removed", 120)
    (serving,) = _containers(engine, **{LABEL_APP: app})
    assert serving.status == "running"
    assert node_1.poll() is None  # it went on working; nothing restarted it
    assert _serves(moved["url"], HELLO)()

    # Its late reports of the first attempt change nothing.
    asyncio.run(_late_reports(platform, uuid.UUID(d["id"]), uuid.UUID(first)))
    after = _deployment(api, d["id"])
    assert after == moved
    assert one_container()


def _kill(platform: Platform, name: str) -> None:
    """SIGKILL a service: nothing of its own shutdown runs."""
    process = platform.processes.pop(name)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_deployment_kept_across_restarts_goes_when_a_resumed_redeploy_supersedes_it(
    platform: Platform, git_server: GitServer, engine: docker.DockerClient
) -> None:
    # The fault suite's story of an app: its deployment RUNNING, the node killed and
    # restarted (the deployment kept), a redeploy, the node killed again while the new
    # container starts (its leftover removed, the redeploy resumed), then the StopWork
    # of the superseded deployment.
    settings = node_settings(platform, _unique("resume"))
    try:
        with platform.concurrently():
            platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
            platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
            platform.start("node", "shipwreck_node", "node ready", **settings)
            api = start_api(platform)
        wait_for_nodes(api, 1)
        app = _unique("kept")
        git_server.publish_app(app, "python-version", overrides={"VERSION": "v1\n"})
        first = api.deploy(git_server.url(app))
        assert api.wait_terminal(first)["status"] == "RUNNING", platform.log_tail("node")
        url = _deployment(api, first)["url"]
        _until(_serves(url, "v1\n"), "v1 served")

        _kill(platform, "node")
        platform.start("node-2", "shipwreck_node", "node ready", **settings)
        _until(lambda: "keep " in platform.log_tail("node-2"), "v1 kept by the assignment")
        # The killed node's Caddy and unbound run on: the restarted node supervises them.
        assert "adopted Caddy" in platform.logs["node-2"].read_text()
        assert "adopted unbound" in platform.logs["node-2"].read_text()

        toml = app_files("python-version")["Shipwreck.toml"]
        assert isinstance(toml, bytes)
        # Slow to listen: the node is killed while the new container runs unhealthy.
        slow = toml.replace(b'run = "python3 app.py"', b'run = "sleep 5; python3 app.py"')
        git_server.publish_app(
            app, "python-version", overrides={"VERSION": "v2\n", "Shipwreck.toml": slow}
        )
        second = api.deploy(git_server.url(app))
        _until(lambda: bool(_containers(engine, **{LABEL_DEPLOYMENT: second})), "v2 started")
        _kill(platform, "node-2")
        platform.start("node-3", "shipwreck_node", "node ready", **settings)

        assert api.wait_terminal(second)["status"] == "RUNNING", platform.log_tail("node-3")
        assert "resume " in platform.log_tail("node-3")
        _until(lambda: _deployment(api, first)["status"] == "SUPERSEDED", "v1 superseded", 60)

        def deployments_with_containers() -> list[str]:
            return [c.labels[LABEL_DEPLOYMENT] for c in _containers(engine, **{LABEL_APP: app})]

        # v1's container goes after the drain and its stop, whatever the restarts did.
        _until(lambda: deployments_with_containers() == [second], "only v2's container", 60)
        assert _serves(url, "v2\n")()

        # The Caddy the first node started, adopted by each node after it, is node-3's to
        # keep running: killed, it is started again and every app is routed again.
        proxy_dir = load_settings(NodeSettings, settings).proxy_dir
        caddy = json.loads((proxy_dir / "caddy.process.json").read_text())["pid"]
        os.kill(caddy, signal.SIGKILL)
        _until(
            lambda: "starting it again" in platform.log_tail("node-3"), "Caddy started again", 30
        )
        _until(_serves(url, "v2\n"), "v2 served again through the new Caddy", 30)
    finally:
        # Should the test fail before node-3 runs, the killed nodes' Caddy and unbound are
        # nobody's to stop.
        stop_node_proxy(settings)


async def _late_reports(platform: Platform, deployment_id: uuid.UUID, node_id: uuid.UUID) -> None:
    """Send node ``node_id``'s reports of attempt 1, then wait until the orchestrator has
    handled them: it handles its reports in order, so once it answers a registration sent
    after them (with an assignment for that node), they are behind it."""
    broker = create_broker(platform.amqp_url, app_id="test-late")
    marker = uuid.uuid4()
    answered = asyncio.Event()

    @broker.subscriber(node_work_route(str(marker)).declaration(), events_exchange())
    async def on_assignment(msg: NodeAssignment) -> None:
        answered.set()

    now = datetime.now(UTC)
    async with broker:
        await broker.start()
        await declare_route(broker, node_work_route(str(marker)))
        for report in (
            StageReported(
                deployment_id=deployment_id, node_id=node_id, stage=Stage.STARTING, at=now
            ),
            WorkSucceeded(
                deployment_id=deployment_id,
                node_id=node_id,
                commit="0" * 40,
                image="late",
                container_id="late",
                url="http://late/",
                at=now,
            ),
            WorkFailed(
                deployment_id=deployment_id,
                node_id=node_id,
                stage=Stage.STARTING,
                reason="late",
                at=now,
            ),
            WorkLost(deployment_id=deployment_id, node_id=node_id, reason="late", at=now),
        ):
            await publish(broker, report)
        await publish(
            broker,
            NodeRegistered(
                node_id=marker, hostname="marker", cpu_count=1, mem_total_mb=1, started_at=now
            ),
        )
        await asyncio.wait_for(answered.wait(), 60)
