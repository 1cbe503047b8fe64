"""The node as a process: work arrives on its RabbitMQ queue, reports and logs go out.

``python -m shipwreck_node`` runs against an isolated vhost, with the real git daemon,
Docker and a Caddy it starts on ports of its own. The test speaks to it only through
messages, as the orchestrator does, and to the app only through Caddy, as users do.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import pytest

from shipwreck_contracts import (
    DeployWork,
    LogLine,
    LogStream,
    NodeHeartbeat,
    StageReported,
    StopWork,
    WorkFailed,
    WorkSucceeded,
    tag_of,
)
from shipwreck_messaging import (
    Route,
    create_broker,
    declare_route,
    events_exchange,
    node_work_routing_key,
    publish,
)
from shipwreck_node.settings import NodeSettings
from tests.support.fakes_node import Outbox
from tests.support.gitdaemon import GitServer, free_port, git_server
from tests.support.node_infra import get, remove_node_leftovers
from tests.support.platform import Platform, platform, service_env

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

__all__ = ["git_server", "platform"]

Observed = StageReported | WorkSucceeded | WorkFailed | LogLine | NodeHeartbeat
BASE_PYTHON = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_PYTHON", "shipwreck/base-python:bookworm")
CA_BUNDLE = os.environ.get("SHIPWRECK_TEST_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


async def test_the_node_process_deploys_reports_and_stops_an_app(
    platform: Platform, git_server: GitServer, tmp_path: Path
) -> None:
    name = f"process-node-{uuid.uuid4().hex[:8]}"
    node_id = NodeSettings(node_name=name).node_id
    http_port, admin_port = free_port(), free_port()
    env = service_env(
        {
            "node_name": name,
            "base_image_python": BASE_PYTHON,
            "build_ca_bundle": CA_BUNDLE,
            "git_allow_private": "true",
            "work_dir": str(tmp_path / "node-work"),
            "heartbeat_seconds": "0.5",
            "proxy_http_port": str(http_port),
            "proxy_admin": f"127.0.0.1:{admin_port}",
            "proxy_dns_port": str(free_port()),
            "drain_seconds": "0.2",
        }
    )
    await anyio.to_thread.run_sync(
        lambda: platform.start("node", "shipwreck_node", ready="node ready", **env)
    )

    outbox = Outbox()
    broker = create_broker(platform.amqp_url, app_id="test-orchestrator")
    observer = Route(
        "test.node-observer",
        tuple(tag_of(kind) for kind in (StageReported, WorkSucceeded, WorkFailed, LogLine)),
    )
    beats = Route("test.node-heartbeats", (tag_of(NodeHeartbeat),))
    for route in (observer, beats):

        @broker.subscriber(route.declaration(), events_exchange())
        async def observe(message: Observed) -> None:
            await outbox.send(message)

    engine = docker.from_env()
    git_server.publish_app("proc-app", "python-hello")
    work = DeployWork(
        deployment_id=uuid.uuid4(),
        app="proc-app",
        repo_url=git_server.url("proc-app"),
        branch="main",
        node_id=node_id,
        attempt=2,
        requested_at=datetime.now(UTC),
    )
    try:
        async with broker:
            await broker.start()
            for route in (observer, beats):
                await declare_route(broker, route)
            # mandatory: the node's queue must exist (the node declared it at start).
            work_key = node_work_routing_key(str(node_id))
            await publish(broker, work, routing_key=work_key, mandatory=True)

            with anyio.fail_after(240):
                (outcome,) = await outbox.wait_for(WorkSucceeded)
            assert outcome.deployment_id == work.deployment_id
            assert outcome.attempt == 2
            assert outcome.node_id == node_id
            assert [r.stage.value for r in outbox.of(StageReported)] == [
                "CLONING",
                "BUILDING",
                "STARTING",
            ]
            assert outcome.url == f"http://proc-app.localhost:{http_port}/"
            answer = await anyio.to_thread.run_sync(lambda: get(http_port, outcome.url))
            assert answer == (200, "hello from shipwreck: 1,234,567 users\n")

            def beat_lists_it(running: bool) -> Callable[[], bool]:
                def check() -> bool:
                    beats_now = [b for b in outbox.of(NodeHeartbeat) if b.node_id == node_id]
                    return (
                        bool(beats_now) and (work.deployment_id in beats_now[-1].running) is running
                    )

                return check

            with anyio.fail_after(10):
                await outbox.wait_until(beat_lists_it(True))

            stop = StopWork(
                deployment_id=work.deployment_id,
                app=work.app,
                node_id=node_id,
                reason="app stopped",
                requested_at=datetime.now(UTC),
            )
            await publish(broker, stop, routing_key=work_key, mandatory=True)

            def stopped() -> bool:
                return any(
                    m.stream is LogStream.SYSTEM and m.text.startswith("stopped: app stopped")
                    for m in outbox.of(LogLine)
                )

            with anyio.fail_after(30):
                await outbox.wait_until(stopped)
                await outbox.wait_until(beat_lists_it(False))
            label = f"org.shipwreck.deployment={work.deployment_id}"
            assert engine.containers.list(all=True, filters={"label": label}) == []
            # The app stopped: its route went with it.
            answer = await anyio.to_thread.run_sync(lambda: get(http_port, outcome.url))
            assert answer[0] == 404
            lines = [m for m in outbox.of(LogLine) if m.deployment_id == work.deployment_id]
            assert [m.sequence for m in lines] == list(range(1, len(lines) + 1))
            assert {m.attempt for m in lines} == {2}
    finally:
        platform.stop("node")
        remove_node_leftovers(engine, str(node_id))
        engine.close()
    # The node stopped the Caddy it had started.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", admin_port), timeout=5).close()
