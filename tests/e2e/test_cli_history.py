"""`shipwreck events|state|diff|logs|projections` against a real api process on RabbitMQ.

The test plays the orchestrator (relayed events with their log positions, answers to replay
requests) and the node (log lines), as tests/e2e/test_cli.py does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aio_pika
import pytest

from shipwreck_contracts import (
    DeploymentRequested,
    DeploymentStatus,
    LogLine,
    LogStream,
    ReplayFinished,
    encode,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.e2e.test_cli import SHIPWRECK, Orchestrator, _env, _shipwreck, api, orchestrator
from tests.support.platform import platform as _platform  # noqa: F401
from tests.support.replays import replay_requests, running
from tests.unit.test_api_story import Log, Relayed, deployment, story

__all__ = ["api", "orchestrator"]  # fixtures shared with test_cli

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]

S = DeploymentStatus


def _requested_at(relayed: Sequence[Relayed], deployment_id: uuid.UUID) -> datetime:
    for item in relayed:
        if isinstance(item.message, DeploymentRequested) and (
            item.message.deployment_id == deployment_id
        ):
            return item.message.at
    raise AssertionError(deployment_id)


async def _until(api: str, *args: str, contains: str) -> str:
    """Run the command until its output contains ``contains`` (the api folds as it goes)."""
    out = ""
    for _ in range(100):
        code, out, _ = await _shipwreck(api, *args)
        if code == 0 and contains in out:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"`shipwreck {' '.join(args)}` never showed {contains!r}:\n{out}")


async def test_events_show_a_deployments_stored_timeline(
    api: str, orchestrator: Orchestrator
) -> None:
    s = story(start=600)
    await orchestrator.relay(s.relayed, pause=0)
    await _until(api, "status", contains="SUPERSEDED")
    code, out, err = await _shipwreck(api, "events", str(s.first))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"deployment {s.first} (hello, SUPERSEDED)"
    assert lines[1].split() == ["SEQ", "TIME", "TYPE", "DATA"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == [str(n) for n in range(1, 9)]
    assert [r[3] for r in rows] == [
        "deployment.requested.v1",
        "deployment.initialized.v1",
        "deployment.scheduled.v1",
        "deployment.progressed.v1",
        "deployment.progressed.v1",
        "deployment.progressed.v1",
        "deployment.running.v1",
        "deployment.superseded.v1",
    ]
    assert "app=hello" in lines[3]
    assert "stage=BUILDING" in lines[6]
    assert f"by={s.second}" in lines[-1]
    # An app's name works too: its newest deployment.
    code, out, _ = await _shipwreck(api, "events", "other")
    assert code == 0
    assert out.splitlines()[0] == f"deployment {s.cancelled} (other, CANCELLED)"
    code, _, err = await _shipwreck(api, "events", "nobody")
    assert code == 1
    assert "neither a deployment id nor an app name" in err


async def test_state_at_a_time_and_diff_between_two(api: str, orchestrator: Orchestrator) -> None:
    s = story(start=700)
    await orchestrator.relay(s.relayed, pause=0)
    await _until(api, "status", contains="SUPERSEDED")
    before = (_requested_at(s.relayed, s.second) - timedelta(milliseconds=1)).isoformat()
    code, out, err = await _shipwreck(api, "state", "--at", before)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"state at {before[:10]} {before[11:19]} UTC"
    apps = lines[lines.index("apps:") + 1 : lines.index("apps:") + 3]
    assert apps[0].split()[:2] == ["NAME", "STATUS"]
    assert apps[1].split()[:2] == ["hello", "RUNNING"]
    deployments = lines[lines.index("deployments (newest 1):") + 2]
    assert deployments.split()[:3] == [str(s.first), "hello", "RUNNING"]
    # Relative times: a minute ago, every event of the story had happened.
    code, out, _ = await _shipwreck(api, "state", "--at", "-1m")
    assert code == 0
    assert "deployments (newest 5):" in out
    # What changed from before the redeploy until now.
    code, out, err = await _shipwreck(api, "diff", before, "now")
    assert code == 0, err
    lines = out.splitlines()
    assert "apps added: other" in lines
    assert "current deployment changed:" in lines
    assert lines[lines.index("current deployment changed:") + 1].startswith(f"  hello: {s.first} (")
    assert f"-> {s.second} (" in lines[lines.index("current deployment changed:") + 1]
    ids = {str(d) for d in (s.first, s.second, s.failed, s.other, s.cancelled)}
    changed = {
        line.split()[0]: line.split()[2:]
        for line in lines
        if line.startswith("  ") and line.split()[0] in ids
    }
    assert changed[str(s.first)] == ["RUNNING", "SUPERSEDED"]
    assert changed[str(s.second)] == ["-", "RUNNING"]
    code, out, _ = await _shipwreck(api, "diff", "-2m", "-1m")
    assert code == 0
    assert out.splitlines()[-1] == "(no changes)"


async def test_projections_rebuild_rebuilds_from_a_replay(
    api: str, orchestrator: Orchestrator
) -> None:
    s = story(start=800)
    await orchestrator.relay(s.relayed, pause=0)
    counts = f"5 deployments, 2 apps, {len(s.relayed)} events"
    # Every event folded before the rebuild (a status that shows SUPERSEDED may still miss
    # the story's last events), so that "before" is the whole story.
    await _until(api, "projections", "status", contains=counts)
    async with running(_answer_replays, orchestrator, s.relayed):
        code, out, err = await _shipwreck(api, "projections", "rebuild")
    assert code == 0, err
    head, before, ledger = out.splitlines()
    assert head.startswith("read model rebuilt in ")
    last = max(r.position for r in s.relayed)
    assert head.endswith(f"up to position {last}: {counts}")
    assert before == f"before: {counts}"
    # No watcher runs here: the ledger has no replay to wait for.
    assert ledger == "ledger: the watcher's replay has not finished (0 entries so far)"
    code, out, _ = await _shipwreck(api, "projections", "status")
    assert code == 0
    assert out.splitlines() == [
        f"read model: ready (from orchestrator, up to position {last})",
        counts,
        "ledger: rebuilding (from watcher, up to position -), 0 entries",
    ]


async def _answer_replays(
    orchestrator: Orchestrator, relayed: Sequence[Relayed], stop: asyncio.Event
) -> None:
    """Be the orchestrator's relay: answer every replay request in its commands queue."""
    async for request in replay_requests(orchestrator.channel, stop):
        for item in relayed:
            await orchestrator.channel.default_exchange.publish(
                aio_pika.Message(
                    encode(item.message),
                    headers={ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position},
                ),
                routing_key=request.reply_to,
            )
        finished = ReplayFinished(
            origin="orchestrator",
            last_position=max(r.position for r in relayed),
            at=datetime.now(UTC),
        )
        await orchestrator.channel.default_exchange.publish(
            aio_pika.Message(encode(finished)), routing_key=request.reply_to
        )


# --- logs --------------------------------------------------------------------------------------


def _line(d: uuid.UUID, n: int) -> LogLine:
    return LogLine(
        deployment_id=d,
        stream=LogStream.BUILD,
        sequence=n,
        text=f"build line {n}",
        at=datetime.now(UTC),
    )


async def test_logs_of_an_app_print_the_kept_lines(api: str, orchestrator: Orchestrator) -> None:
    d, relayed = deployment(Log(start=900), app="loggy", outcome=S.ERRORED)
    await orchestrator.relay(relayed, pause=0)
    for n in range(5):
        await orchestrator.publish(_line(d, n))
    out = await _until(api, "logs", "loggy", contains="build line 4")
    assert out.splitlines() == [f"build line {n}" for n in range(5)]


class Proxy:
    """A TCP proxy in front of the api whose connections the test can cut."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    def cut(self) -> None:
        """Drop every connection, as a restarting load balancer would."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self.cut()
            server.close()


async def test_logs_follow_resumes_after_a_dropped_connection_without_gaps_or_repeats(
    api: str, orchestrator: Orchestrator
) -> None:
    d, relayed = deployment(Log(start=1000), app="follow", outcome=S.ERRORED)
    await orchestrator.relay(relayed[:-1], pause=0)  # BUILDING
    await _until(api, "status", str(d), contains="BUILDING")
    proxy = Proxy(api)
    async with proxy.serving() as through:
        cli = await asyncio.create_subprocess_exec(
            str(SHIPWRECK),
            "logs",
            str(d),
            "-f",
            env=_env(through),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert cli.stdout is not None
        printed: list[str] = []

        async def read(count: int) -> None:
            assert cli.stdout is not None
            while len(printed) < count:
                line = await asyncio.wait_for(cli.stdout.readline(), 20)
                assert line, "the CLI ended early"
                printed.append(line.decode().rstrip("\n"))

        for n in range(10):
            await orchestrator.publish(_line(d, n))
        await read(10)
        proxy.cut()  # the connection drops; the build goes on
        for n in range(10, 20):
            await orchestrator.publish(_line(d, n))
        await read(20)
        await orchestrator.relay(relayed[-1:])  # ERRORED: the stream ends soon after
        rest, err = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode == 0, err
    assert printed + rest.decode().splitlines() == [f"build line {n}" for n in range(20)]
    assert proxy.connections >= 2  # it did reconnect
