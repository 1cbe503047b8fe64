"""Subscriptions on the real api and RabbitMQ: every status and line, resuming, slow readers.

The tests play the orchestrator and the node (events with their log headers, log lines),
as tests/integration/test_api_graphql.py does, and read what websocket clients receive.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import ClientConnection

from shipwreck_contracts import (
    DeploymentProgressed,
    DeploymentStatus,
    LogLine,
    LogStream,
    RequestDeployment,
    Stage,
    tag_of,
)
from tests.integration.test_api_graphql import (
    TOKEN,
    Orchestra,
    amqp_url,
    api,
    gql,
    orchestra,
    subscription,
)
from tests.support.graphql_ws import subscribe
from tests.unit.test_api_story import Log, Relayed, deployment

__all__ = ["amqp_url", "orchestra"]  # fixtures shared with test_api_graphql

pytestmark = [pytest.mark.anyio, pytest.mark.infra]

S = DeploymentStatus
UPDATES = """subscription($id: ID!, $after: Int) {
  deploymentUpdates(id: $id, after: $after) { id status sequence error history { status } } }"""
LOGS = """subscription($id: ID!, $after: Int) {
  deploymentLogs(id: $id, after: $after) { sequence stream text } }"""


def _line(d: uuid.UUID, n: int, text: str | None = None) -> LogLine:
    return LogLine(
        deployment_id=d,
        stream=LogStream.BUILD,
        sequence=n,
        text=text or f"build step {n}",
        at=datetime.now(UTC),
    )


def _building(relayed: list[Relayed]) -> int:
    return next(
        i
        for i, r in enumerate(relayed)
        if isinstance(r.message, DeploymentProgressed) and r.message.stage is Stage.BUILDING
    )


async def _next(receive: Callable[[], Any], field: str) -> dict[str, Any]:
    message = await receive()
    assert message["type"] == "next", message
    item: dict[str, Any] = message["payload"]["data"][field]
    return item


async def test_a_client_subscribed_before_a_deploy_gets_every_status_and_every_line(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    requests = await orchestra.spy([tag_of(RequestDeployment)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        answer = await gql(
            client,
            'mutation { deploy(input: {repoUrl: "https://git.example.com/team/app.git"}) { id } }',
        )
        d = uuid.UUID(answer["data"]["deploy"]["id"])
        request, _ = await requests.next()
        assert isinstance(request, RequestDeployment)
        _, relayed = deployment(
            Log(start=7000), app="app", repo_url=request.repo_url, deployment_id=d
        )
        building = _building(relayed)
        async with (
            subscription(client, UPDATES, id=str(d)) as updates,
            subscription(client, LOGS, id=str(d)) as logs,
        ):
            statuses = [(await _next(updates, "deploymentUpdates"))["status"]]  # REQUESTED
            # Play the orchestrator and the node, at full speed, while the clients read.
            await orchestra.relay(relayed[: building + 1])
            for n in range(200):
                await orchestra.send(_line(d, n))
            await orchestra.relay(relayed[building + 1 :])
            while statuses[-1] != "RUNNING":
                statuses.append((await _next(updates, "deploymentUpdates"))["status"])
            lines = [await _next(logs, "deploymentLogs") for _ in range(200)]
    assert statuses == [
        "REQUESTED",
        "INITIALIZED",
        "SCHEDULED",
        "CLONING",
        "BUILDING",
        "STARTING",
        "RUNNING",
    ]
    assert [line["sequence"] for line in lines] == list(range(200))
    assert [line["text"] for line in lines[:2]] == ["build step 0", "build step 1"]


async def test_a_late_client_resuming_with_after_gets_exactly_the_rest(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    d, relayed = deployment(Log(start=8000), app="late", outcome=S.ERRORED)
    building = _building(relayed)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await orchestra.relay(relayed[:1])
        async with subscription(client, UPDATES, id=str(d)) as first:
            seen = [await _next(first, "deploymentUpdates")]
            await orchestra.relay(relayed[1:2])
            seen.append(await _next(first, "deploymentUpdates"))  # INITIALIZED
            # The first client goes away; the deployment goes on; logs are written.
        await orchestra.relay(relayed[2 : building + 1])
        for n in range(50):
            await orchestra.send(_line(d, n))
        await asyncio.sleep(0.3)
        async with (
            subscription(client, UPDATES, id=str(d), after=seen[-1]["sequence"]) as resumed,
            subscription(client, LOGS, id=str(d), after=29) as resumed_logs,
        ):
            missed = [await _next(resumed, "deploymentUpdates") for _ in range(3)]
            for n in range(50, 60):
                await orchestra.send(_line(d, n))
            await orchestra.relay(relayed[building + 1 :])  # ERRORED, live
            missed.append(await _next(resumed, "deploymentUpdates"))
            done = await resumed()
            lines = [await _next(resumed_logs, "deploymentLogs") for _ in range(30)]
    assert [u["status"] for u in seen] == ["REQUESTED", "INITIALIZED"]
    assert [u["status"] for u in missed] == ["SCHEDULED", "CLONING", "BUILDING", "ERRORED"]
    sequences = [u["sequence"] for u in seen + missed]
    assert sequences == [1, 2, 3, 4, 5, 6]  # nothing twice, nothing skipped
    assert missed[-1]["error"] == "pip install failed: no matching distribution for flask==99"
    assert done == {"id": "1", "type": "complete"}
    assert [line["sequence"] for line in lines] == list(range(30, 60))


# --- a client that stops reading --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"process {pid} has no VmRSS")


@contextmanager
def _api_process(amqp_url: str, tmp_path: Path, **settings: str) -> Iterator[tuple[int, str]]:
    """``python -m shipwreck_api`` on its own core (real sockets, real backpressure): its pid
    and websocket URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(
        SHIPWRECK_AMQP_URL=amqp_url,
        SHIPWRECK_API_PORT=str(port),
        SHIPWRECK_API_TOKEN=TOKEN,
        SHIPWRECK_STATE_DIR=str(tmp_path),
        SHIPWRECK_REPLAY_RETRY_SECONDS="0.2",
        **{f"SHIPWRECK_{k.upper()}": v for k, v in settings.items()},
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipwreck_api"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "api ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc.pid, f"ws://127.0.0.1:{port}/graphql"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def _subscribe(url: str, query: str, **variables: Any) -> ClientConnection:
    # A client that stops reading stops reading from its socket too.
    return await subscribe(url, TOKEN, query, max_queue=1, **variables)


async def test_a_client_that_stops_reading_stays_bounded_and_others_get_every_line(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    d, relayed = deployment(Log(start=9000), app="busy")
    total = 6_000
    settings = {"log_subscriber_queue_size": "100", "log_buffer_lines": "1000"}
    with _api_process(amqp_url, tmp_path, **settings) as (pid, url):
        await orchestra.relay(relayed[: _building(relayed) + 1])
        stuck = await _subscribe(url, LOGS, id=str(d))
        reader = await _subscribe(url, LOGS, id=str(d))
        await orchestra.send(_line(d, 0))
        first = json.loads(await stuck.recv())  # it reads one line, then never again
        received: list[int] = []

        async def read() -> None:
            while len(received) < total:
                message = json.loads(await reader.recv())
                received.append(message["payload"]["data"]["deploymentLogs"]["sequence"])

        reading = asyncio.create_task(read())
        rss: list[int] = []
        for lines in (range(1, 2000), range(2000, total)):
            await asyncio.gather(*(orchestra.send(_line(d, n, "x" * 200)) for n in lines))
            await asyncio.wait_for(_caught_up(received, lines[-1] + 1), 60)  # all handled
            rss.append(_rss_kib(pid))
        await asyncio.wait_for(reading, 60)
        await stuck.close()
        await reader.close()
    assert first["payload"]["data"]["deploymentLogs"]["sequence"] == 0
    assert received == list(range(total))  # every line, in order, once
    # The api's memory stops growing once the stuck client's queue (100 lines) and the
    # log buffer (1,000 lines) are full, although 4,000 lines more (1 MB) go past them.
    # (tests/unit/test_api_live.py shows the same for 10,000 lines, object by object.)
    growth_kib = rss[1] - rss[0]
    assert growth_kib < 2048, rss


async def _caught_up(received: list[int], count: int) -> None:
    while True:
        if len(received) >= count:
            return
        await asyncio.sleep(0.02)


# --- updates written straight to the sockets of many clients -------------------------------


async def _until_complete(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every update until the operation's ``complete`` (which must come)."""
    got = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "complete":
            assert message == {"id": "1", "type": "complete"}
            return got
        assert message["type"] == "next", message
        got.append(message["payload"]["data"]["deploymentUpdates"])


async def test_many_clients_of_the_api_process_get_every_status_once_in_order_then_complete(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    # The api process serves websockets with its own protocol: once a client has caught up,
    # its updates are written to its socket by the publish itself (shipwreck_api.direct).
    d, relayed = deployment(Log(start=10_000), app="many", outcome=S.ERRORED)
    building = _building(relayed)
    with _api_process(amqp_url, tmp_path) as (_, url):
        await orchestra.relay(relayed[:1])
        clients = [await _subscribe(url, UPDATES, id=str(d)) for _ in range(50)]
        firsts = [json.loads(await ws.recv()) for ws in clients]
        await orchestra.relay(relayed[1:building])
        # A late client resumes after the first status it had seen elsewhere.
        late = await _subscribe(url, UPDATES, id=str(d), after=1)
        await orchestra.relay(relayed[building:])
        updates = await asyncio.gather(*(_until_complete(ws) for ws in [*clients, late]))
        for ws in [*clients, late]:
            await ws.close()
    statuses = ["INITIALIZED", "SCHEDULED", "CLONING", "BUILDING", "ERRORED"]
    assert {f["payload"]["data"]["deploymentUpdates"]["status"] for f in firsts} == {"REQUESTED"}
    for got in updates[:-1]:
        assert [u["status"] for u in got] == statuses
        assert [u["sequence"] for u in got] == [2, 3, 4, 5, 6]
    # The late one: what it missed, then live ones; nothing twice, nothing skipped.
    assert [u["sequence"] for u in updates[-1]] == [2, 3, 4, 5, 6]
    assert updates[-1][-1]["history"][-1] == {"status": "ERRORED"}
