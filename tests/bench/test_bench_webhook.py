"""Webhook received to deployment requested: latency through api, watcher and orchestrator.

Real processes on a fresh vhost and database (the `platform` fixture): the api verifies the
push, the watcher records it in its ledger and announces repo.changed, the orchestrator
records the new deployment and its relay publishes deployment.requested. Measured from just
before the HTTP POST's bytes are written (a minimal client, the request built beforehand)
to the arrival of deployment.requested at a listening client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from faststream.rabbit import RabbitQueue

from shipwreck_contracts import DeploymentRequested, RequestDeployment, Trigger
from shipwreck_messaging import create_broker, events_exchange, publish
from tests.support.gitdaemon import free_port
from tests.support.machine import (
    DiskWatch,
    conntrack_active,
    cpu_ms_per,
    cpu_snapshot,
    python_loop_ms,
)
from tests.support.platform import Platform

SECRET = "bench-secret"
COUNT = int(os.environ.get("BENCH_WEBHOOKS", "300"))
# Listening to the intermediate messages too (for the time of each hop) costs RabbitMQ two
# more deliveries and this process two more messages per push, on the same two cores:
# BENCH_WEBHOOK_HOPS=0 measures the end-to-end time without them.
HOPS = os.environ.get("BENCH_WEBHOOK_HOPS", "1") != "0"
RESULTS = Path(__file__).resolve().parents[2] / ".benchmarks" / "webhook.jsonl"
REPO = "https://git.example.org/acme/bench.git"


def test_webhook_to_deployment_requested(platform: Platform) -> None:
    port = free_port()
    platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    platform.start("watcher", "shipwreck_watcher", "watcher ready", SHIPWRECK_WATCH_INTERVAL="3600")
    platform.start(
        "api",
        "shipwreck_api",
        "api ready",
        SHIPWRECK_API_PORT=str(port),
        SHIPWRECK_API_TOKEN="t",
        SHIPWRECK_WEBHOOK_SECRET=SECRET,
    )
    load_before = os.getloadavg()
    loop_ms = python_loop_ms()
    figures = asyncio.run(_measure(platform, port))
    record = {
        "benchmark": "webhook_to_requested",
        "webhooks": COUNT,
        "hop_listeners": HOPS,
        **figures,
        # Other work on the machine moves these figures more than anything measured here.
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        # The machine's speed: the same code gave twice the latency on a day this was twice.
        "python_loop_ms": loop_ms,
        "conntrack": conntrack_active(),
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    assert figures["count"] == COUNT


class _Poster:
    """A minimal HTTP/1.1 client on one kept-alive connection: the request's bytes are
    built before the clock starts, so what is measured is the platform's time, not a
    client library's (a Git host's sender is not part of it either)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Poster:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @staticmethod
    def request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, str]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body.decode()

    def close(self) -> None:
        self.writer.close()


async def _measure(platform: Platform, port: int) -> dict[str, object]:
    broker = create_broker(platform.amqp_url, app_id="bench")
    arrived: dict[str, float] = {}
    events: dict[str, asyncio.Event] = {}
    queue = RabbitQueue(
        f"bench-{uuid.uuid4().hex[:8]}",
        exclusive=True,
        auto_delete=True,
        routing_key="deployment.requested.v1",
    )

    @broker.subscriber(queue, events_exchange())
    async def on_requested(msg: DeploymentRequested) -> None:
        if msg.trigger is Trigger.WEBHOOK and msg.commit:
            arrived[msg.commit] = time.perf_counter()
            events.setdefault(msg.commit, asyncio.Event()).set()

    hops: dict[str, float] = {}

    def listen(tag: str) -> None:
        hop_queue = RabbitQueue(
            f"bench-{tag}-{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
            routing_key=tag,
        )

        @broker.subscriber(hop_queue, events_exchange())
        async def on_hop(msg: dict[str, object]) -> None:
            hops[f"{tag}:{msg.get('commit')}"] = time.perf_counter()

    if HOPS:
        listen("repo.webhook-received.v1")
        listen("repo.changed.v1")

    services = {name: proc.pid for name, proc in platform.processes.items()}
    cpu_before: dict[str, float] = {}
    latencies: list[float] = []
    split: dict[str, list[float]] = {"webhook_received": [], "repo_changed": []}
    client = await _Poster.open(port)
    async with broker:
        await broker.start()
        # The first deploy creates the app, which starts watching its branch.
        await publish(
            broker,
            RequestDeployment(
                deployment_id=uuid.uuid4(),
                repo_url=REPO,
                actor="bench",
                requested_at=datetime.now(UTC),
            ),
            mandatory=True,
        )
        await asyncio.sleep(2)
        disk = DiskWatch()
        for i in range(COUNT + 20):  # the first 20 warm up connections and caches
            commit = hashlib.sha1(f"bench-{i}".encode()).hexdigest()  # noqa: S324 - a fake id
            body = json.dumps(
                {"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": REPO}}
            ).encode()
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            done = events.setdefault(commit, asyncio.Event())
            if i == 20:
                cpu_before = cpu_snapshot(services)
                disk.start()
            request = client.request(
                "/webhooks/github",
                body,
                {
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": f"bench-{i}",
                    "X-Hub-Signature-256": signature,
                    "Content-Type": "application/json",
                },
            )
            started = time.perf_counter()
            status, text = await client.send(request)
            assert status == 202, text
            await asyncio.wait_for(done.wait(), 10)
            if i >= 20:
                latencies.append((arrived[commit] - started) * 1000)
                for name, tag in (
                    ("webhook_received", "repo.webhook-received.v1"),
                    ("repo_changed", "repo.changed.v1"),
                ):
                    at = hops.get(f"{tag}:{commit}")
                    if at is not None:
                        split[name].append((at - started) * 1000)
    cpu_after = cpu_snapshot(services)
    disk.stop()
    client.close()
    latencies.sort()
    return {
        "count": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "max_ms": round(latencies[-1], 2),
        **{f"{k}_p50_ms": round(statistics.median(v), 2) for k, v in split.items() if v},
        **{
            f"{k}_p99_ms": round(sorted(v)[int(len(v) * 0.99) - 1], 2)
            for k, v in split.items()
            if v
        },
        # What each process spent per push: on two cores, the latency follows the sum.
        "cpu_ms_per_push": cpu_ms_per(cpu_before, cpu_after, len(latencies)),
        # Each push waits for five flushes in a row: a stalled disk makes the tail.
        **disk.figures(),
    }
