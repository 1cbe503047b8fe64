"""The `shipwreck` command against a real api process on a real RabbitMQ (its own vhost).

The test plays the orchestrator: it takes the RequestDeployment the api publishes and
relays the events of that deployment, as the orchestrator's outbox relay would.
"""

from __future__ import annotations

import asyncio
import os
import pty
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from shipwreck_contracts import (
    DeploymentStatus,
    LogLine,
    LogStream,
    Message,
    NodeHeartbeat,
    RequestDeployment,
    Stage,
    decode_message,
    encode,
    tag_of,
)
from shipwreck_messaging import EXCHANGE, ORIGIN_HEADER, POSITION_HEADER
from tests.support.platform import Platform
from tests.support.platform import platform as _platform  # noqa: F401
from tests.support.replays import answer_the_first_replay, running
from tests.unit.test_api_story import NODE, Log, Relayed, deployment, story

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]

TOKEN = "cli-test-token"
SHIPWRECK = Path(sys.executable).parent / "shipwreck"
S = DeploymentStatus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orchestrator:
    """Stands in for the orchestrator: reads commands, relays events."""

    def __init__(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        self.connection = connection

    async def open(self) -> None:
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.requests = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.requests.bind(self.exchange, routing_key=tag_of(RequestDeployment))

    async def next_request(self) -> RequestDeployment:
        for _ in range(400):  # 20 s
            incoming = await self.requests.get(no_ack=True, fail=False)
            if incoming is not None:
                message = decode_message(incoming.body)
                assert isinstance(message, RequestDeployment)
                return message
            await asyncio.sleep(0.05)
        raise AssertionError("the api published no RequestDeployment")

    async def relay(self, items: Sequence[Relayed], *, pause: float = 0.05) -> None:
        for item in items:
            await self.publish(
                item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position}
            )
            await asyncio.sleep(pause)  # a deployment's stages take time

    async def publish(self, message: Message, headers: dict[str, object] | None = None) -> None:
        await self.exchange.publish(
            aio_pika.Message(encode(message), headers=headers or {}),
            routing_key=tag_of(message),
        )


@pytest.fixture
def api(platform: Platform) -> str:
    """A real api process on the platform's vhost; its URL."""
    port = _free_port()
    platform.start(
        "api",
        "shipwreck_api",
        ready="api ready",
        SHIPWRECK_API_PORT=str(port),
        SHIPWRECK_API_TOKEN=TOKEN,
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def orchestrator(platform: Platform) -> AsyncIterator[Orchestrator]:
    connection = await aio_pika.connect_robust(platform.amqp_url)
    try:
        stand_in = Orchestrator(connection)
        await stand_in.open()
        # The api answers about apps and deployments once its start-up replay is answered.
        async with running(answer_the_first_replay, stand_in.channel):
            yield stand_in
    finally:
        # Waited for, not cancelled: cancelled, an AMQP call can hang (tests/support/replays).
        await asyncio.wait([asyncio.ensure_future(connection.close())], timeout=10)


def _env(api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(SHIPWRECK_API_URL=api, SHIPWRECK_API_TOKEN=TOKEN, **extra)
    return env


async def _shipwreck(api: str, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SHIPWRECK),
        *args,
        env=_env(api, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _deploy_and_play(
    api: str,
    orchestrator: Orchestrator,
    outcome: DeploymentStatus,
    *args: str,
    build_output: Sequence[str] = (),
) -> tuple[int, str, str, uuid.UUID]:
    cli = asyncio.create_task(_shipwreck(api, "deploy", "git://127.0.0.1/team/hello.git", *args))
    request = await orchestrator.next_request()
    _, relayed = deployment(
        Log(start=100),
        app="hello",
        repo_url=request.repo_url,
        branch=request.branch,
        deployment_id=request.deployment_id,
        outcome=outcome,
    )
    building = next(
        (i for i, r in enumerate(relayed) if getattr(r.message, "stage", None) == Stage.BUILDING),
        len(relayed),
    )
    await orchestrator.relay(relayed[: building + 1])
    for n, text in enumerate(build_output):
        await orchestrator.publish(
            LogLine(
                deployment_id=request.deployment_id,
                stream=LogStream.BUILD,
                sequence=n,
                text=text,
                at=datetime.now(UTC),
            )
        )
    await asyncio.sleep(0.2)  # the build takes a moment
    await orchestrator.relay(relayed[building + 1 :])
    code, out, err = await cli
    return code, out, err, request.deployment_id


async def test_deploy_follows_the_deployment_and_exits_0_once_it_runs(
    api: str, orchestrator: Orchestrator
) -> None:
    output = ["Step 1/4 : FROM python", "Successfully installed flask", "Step 4/4 : CMD"]
    code, out, err, deployment_id = await _deploy_and_play(
        api, orchestrator, S.RUNNING, "--branch", "dev", build_output=output
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"deployment {deployment_id}"
    statuses = [line for line in lines[1:-2] if not line.startswith("  | ")]
    assert [line.split()[0] for line in statuses] == [
        "REQUESTED",
        "INITIALIZED",
        "SCHEDULED",
        "CLONING",
        "BUILDING",
        "STARTING",
        "RUNNING",
    ]
    assert all(line.split()[1].startswith("+") for line in statuses)  # time since the request
    # The build log, in order, under the stage that wrote it.
    building = lines.index(next(line for line in lines if line.startswith("BUILDING")))
    assert lines[building + 1 : building + 4] == [f"  | {text}" for text in output]
    assert lines[-2].startswith("took: REQUESTED ")
    assert ", BUILDING " in lines[-2]
    assert lines[-1] == "hello is running at http://hello.apps.example.com"
    assert err == ""


async def test_deploy_exits_1_with_the_reason_when_the_deployment_errors(
    api: str, orchestrator: Orchestrator
) -> None:
    code, out, err, deployment_id = await _deploy_and_play(api, orchestrator, S.ERRORED)
    assert code == 1
    assert out.splitlines()[-2].startswith("ERRORED")
    assert out.splitlines()[-1].startswith("took: REQUESTED ")
    assert err == (
        f"deployment {deployment_id} ERRORED: "
        "pip install failed: no matching distribution for flask==99\n"
    )


async def test_deploy_exits_1_when_the_deployment_is_cancelled(
    api: str, orchestrator: Orchestrator
) -> None:
    code, _, err, deployment_id = await _deploy_and_play(api, orchestrator, S.CANCELLED)
    assert code == 1
    assert err.startswith(f"deployment {deployment_id} CANCELLED: cancelled by admin")


async def test_deploy_on_a_terminal_shows_a_live_line_and_ends_with_the_url(
    api: str, orchestrator: Orchestrator
) -> None:
    primary, secondary = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        str(SHIPWRECK),
        "deploy",
        "git://127.0.0.1/team/hello.git",
        env=_env(api, TERM="xterm", COLUMNS="120"),
        stdout=secondary,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(secondary)
    request = await orchestrator.next_request()
    _, relayed = deployment(
        Log(start=100), app="hello", repo_url=request.repo_url, deployment_id=request.deployment_id
    )
    await orchestrator.relay(relayed)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    text = output.decode(errors="replace")
    assert f"deployment {request.deployment_id}" in text
    assert "hello is running at http://hello.apps.example.com" in text
    assert "\x1b[" in text  # the live line redraws itself with terminal control sequences


async def test_a_refused_url_is_reported_and_nothing_is_followed(api: str) -> None:
    code, out, err = await _shipwreck(api, "deploy", "file:///etc")
    assert code == 2
    assert out == ""
    assert err.startswith("shipwreck: the repository URL scheme 'file://' is not allowed")


async def test_a_wrong_token_is_reported_with_exit_code_2(api: str) -> None:
    code, _, err = await _shipwreck(api, "apps", "--token", "wrong")
    assert code == 2
    assert "refused the token (HTTP 401)" in err
    assert "wrong" not in err.replace("--token", "")


async def test_status_apps_and_nodes_show_the_read_model(
    api: str, orchestrator: Orchestrator
) -> None:
    s = story(start=500)
    await orchestrator.relay(s.relayed, pause=0)
    await orchestrator.publish(
        NodeHeartbeat(
            node_id=NODE,
            hostname="worker-1",
            cpu_count=4,
            mem_total_mb=4096,
            mem_free_mb=1024,
            load_avg=0.25,
            at=datetime.now(UTC),
        )
    )
    for _ in range(100):
        code, out, _ = await _shipwreck(api, "status")
        if code == 0 and out.count("\n") == 6 and "CANCELLED" in out and "SUPERSEDED" in out:
            break
        await asyncio.sleep(0.1)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["ID", "APP", "STATUS", "COMMIT", "TRIGGER", "REQUESTED", "URL"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        (str(s.cancelled), "other", "CANCELLED"),
        (str(s.other), "other", "RUNNING"),
        (str(s.failed), "hello", "ERRORED"),
        (str(s.second), "hello", "RUNNING"),
        (str(s.first), "hello", "SUPERSEDED"),
    ]

    code, out, _ = await _shipwreck(api, "status", str(s.failed))
    assert code == 0
    assert "status      ERRORED" in out
    assert "error       pip install failed" in out
    assert out.count("\n  2026-") == 6  # six history entries

    code, out, _ = await _shipwreck(api, "apps")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAME", "STATUS", "WATCH"],
        ["hello", "RUNNING", "yes"],
        ["other", "RUNNING", "yes"],
    ]

    code, out, _ = await _shipwreck(api, "nodes")
    assert code == 0
    node = out.splitlines()[1].split()
    assert node[:4] == [str(NODE), "worker-1", "READY", "4"]
    assert node[-1] == "2"  # hello's and other's current deployments run there

    code, _, err = await _shipwreck(api, "status", str(uuid.uuid4()))
    assert code == 1
    assert "no deployment with id" in err
