"""Webhook received to deployment requested: latency through api, watcher and orchestrator.

Real processes on a fresh vhost and database (the `platform` fixture): the api verifies the
push, the watcher records it in its ledger and announces repo.changed, the orchestrator
records the new deployment and its relay publishes deployment.requested. Measured from just
before the HTTP POST to the arrival of deployment.requested at a listening client.
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

import httpx
from faststream.rabbit import RabbitQueue

from shipwreck_contracts import DeploymentRequested, RequestDeployment, Trigger
from shipwreck_messaging import create_broker, events_exchange, publish
from tests.support.gitdaemon import free_port
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
    figures = asyncio.run(_measure(platform, port))
    record = {
        "benchmark": "webhook_to_requested",
        "webhooks": COUNT,
        "hop_listeners": HOPS,
        **figures,
        # Other work on the machine moves these figures more than anything measured here.
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    assert figures["count"] == COUNT


async def _measure(platform: Platform, port: int) -> dict[str, float]:
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

    latencies: list[float] = []
    split: dict[str, list[float]] = {"webhook_received": [], "repo_changed": []}
    async with broker, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
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
        for i in range(COUNT + 20):  # the first 20 warm up connections and caches
            commit = hashlib.sha1(f"bench-{i}".encode()).hexdigest()  # noqa: S324 - a fake id
            body = json.dumps(
                {"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": REPO}}
            ).encode()
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            done = events.setdefault(commit, asyncio.Event())
            started = time.perf_counter()
            response = await client.post(
                "/webhooks/github",
                content=body,
                headers={
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": f"bench-{i}",
                    "X-Hub-Signature-256": signature,
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 202, response.text
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
    }
