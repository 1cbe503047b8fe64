"""Rebuilding the read model on the real api and RabbitMQ: the same answers, field by field.

The test plays the orchestrator's relay answering the api's replay requests: once at
start-up, once for ``rebuildReadModel``, each time with the same log in another order, as
RabbitMQ may deliver a replay mixed with live events.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest
from litestar.testing import AsyncTestClient
from pamqp.commands import Basic

from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentStatus,
    DeploymentSuperseded,
    Message,
    ReplayFinished,
    ReplayRequested,
    Trigger,
    encode,
    tag_of,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.integration.test_api_graphql import (
    TOKEN,
    Orchestra,
    amqp_url,
    api,
    eventually,
    silent_orchestra,
)
from tests.integration.test_api_subscriptions import _api_process
from tests.unit.test_api_story import NODE, T0, Relayed, story

__all__ = ["amqp_url", "silent_orchestra"]  # fixtures shared with test_api_graphql

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]

DEPLOYMENTS = 10_000
AUTH = {"Authorization": f"Bearer {TOKEN}"}

EVERYTHING = """query($first: Int) {
  deployments(first: $first) {
    id app repoUrl branch commit status trigger actor node attempt url error warnings
    requestedAt updatedAt sequence
    history { status at message }
    events { sequence type at data origin position }
  }
  apps {
    name repoUrl branch watching url
    current { id status sequence }
    latest { id status sequence }
    deployments(first: 5) { id status }
  }
  readModel { counts { deployments apps events } }
}"""


def platform_history(count: int, seed: int = 7) -> list[Relayed]:
    """``count`` deployments of 100 apps as the orchestrator's relay would publish them:
    half still waiting (REQUESTED), some refused at once, some cancelled, and the rest
    running, each taking over from its app's previous deployment."""
    rng = random.Random(seed)
    out: list[Relayed] = []
    running: dict[str, uuid.UUID] = {}
    at = T0

    def add(message: Message) -> None:
        out.append(Relayed(len(out) + 1, message))

    for n in range(count):
        app = f"app-{n % 100}"
        repo = f"https://git.example.com/team/{app}.git"
        d = uuid.UUID(int=rng.getrandbits(128), version=4)
        at += timedelta(seconds=1)
        add(
            DeploymentRequested(
                deployment_id=d,
                app=app,
                repo_url=repo,
                branch="main",
                watch=True,
                trigger=Trigger.WATCH,
                actor="system:watcher",
                at=at,
            )
        )
        if app not in running and n < 100:
            add(AppWatchChanged(app=app, repo_url=repo, branch="main", watching=True, at=at))
        roll = rng.random()
        if roll < 0.65:
            continue  # waiting
        if roll < 0.85:
            add(
                DeploymentErrored(
                    deployment_id=d,
                    app=app,
                    stage=DeploymentStatus.REQUESTED,
                    reason="the branch has no Shipwreck.toml",
                    at=at,
                )
            )
            continue
        add(
            DeploymentInitialized(
                deployment_id=d, app=app, repo_url=repo, branch="main", trigger=Trigger.WATCH, at=at
            )
        )
        if roll < 0.95:
            add(
                DeploymentCancelled(
                    deployment_id=d,
                    app=app,
                    stage=DeploymentStatus.INITIALIZED,
                    actor="admin",
                    at=at,
                )
            )
            continue
        add(
            DeploymentRunning(
                deployment_id=d,
                app=app,
                node_id=NODE,
                commit=f"{n:040x}",
                url=f"http://{app}.apps.example.com",
                at=at,
            )
        )
        old = running.get(app)
        if old is not None:
            add(DeploymentSuperseded(deployment_id=old, app=app, by=d, at=at))
        running[app] = d
    return out


async def replay(amqp_url: str, items: list[Relayed], reply_to: str, seed: int) -> None:
    """Publish ``items`` to the api's queue in a shuffled order, then ReplayFinished."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    # Through aiormq, without confirms, on one channel: fast, and in order on the wire.
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await (await connection.channel(publisher_confirms=False)).get_underlay_channel()
        await _send(channel, shuffled, reply_to)


async def _send(channel: Any, shuffled: list[Relayed], reply_to: str) -> None:
    for start in range(0, len(shuffled), 500):
        # Many in flight at once (the order is shuffled anyway); ReplayFinished goes last.
        await asyncio.gather(
            *(
                channel.basic_publish(
                    encode(item.message),
                    routing_key=reply_to,
                    properties=Basic.Properties(
                        headers={ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position},
                        delivery_mode=2,
                    ),
                )
                for item in shuffled[start : start + 500]
            )
        )
    finished = ReplayFinished(
        origin="orchestrator",
        last_position=max(r.position for r in shuffled),
        at=datetime.now(UTC),
    )
    await channel.basic_publish(encode(finished), routing_key=reply_to)


async def test_a_rebuild_of_ten_thousand_deployments_answers_identically(
    amqp_url: str, tmp_path: Path, silent_orchestra: Orchestra
) -> None:
    history = platform_history(DEPLOYMENTS)
    replays = await silent_orchestra.spy([tag_of(ReplayRequested)])
    with _api_process(amqp_url, tmp_path, rebuild_timeout_seconds="60") as (_, url):
        base = url.replace("ws://", "http://").removesuffix("/graphql")
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as http:
            first = await replays.next_request()
            assert isinstance(first, ReplayRequested)
            await replay(amqp_url, history, first.reply_to, seed=1)
            await _ready(http)
            before = await _everything(http)

            rebuild = asyncio.create_task(
                _gql(
                    http,
                    """mutation { rebuildReadModel { complete lastPosition
                         before { deployments apps events }
                         after { deployments apps events } } }""",
                )
            )
            second = await replays.next_request()
            assert isinstance(second, ReplayRequested)
            assert second.reply_to == first.reply_to
            await replay(amqp_url, history, second.reply_to, seed=2)
            result = (await asyncio.wait_for(rebuild, 60))["rebuildReadModel"]
            after = await _everything(http)

    counts = {"deployments": DEPLOYMENTS, "apps": 100, "events": len(history)}
    assert result == {
        "complete": True,
        "lastPosition": len(history),
        "before": counts,
        "after": counts,
    }
    assert before["readModel"] == after["readModel"] == {"counts": counts}
    assert len(before["deployments"]) == DEPLOYMENTS
    # Field by field, deployment by deployment, app by app.
    for old, new in zip(before["deployments"], after["deployments"], strict=True):
        for name in old:
            assert new[name] == old[name], (old["id"], name)
    for old, new in zip(before["apps"], after["apps"], strict=True):
        for name in old:
            assert new[name] == old[name], (old["name"], name)
    assert before == after


async def _gql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "errors" not in answer, answer["errors"]
    data: dict[str, Any] = answer["data"]
    return data


async def _everything(http: httpx.AsyncClient) -> dict[str, Any]:
    return await _gql(http, EVERYTHING, first=DEPLOYMENTS * 2)


async def _ready(http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(60):
        while True:
            if (await http.get("/healthz")).json()["readModel"]["state"] == "ready":
                return
            await asyncio.sleep(0.1)


# --- the update queue's connection drops ------------------------------------------------------


def _close_feed_connection(vhost: str, queue: str) -> None:
    """Close the connection of the api's update queue ``queue`` from RabbitMQ's side (a
    broker restart, a network cut): its exclusive queue goes with it. Other apis of
    earlier tests may still be closing their own connections on the same vhost."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "-p", vhost, "pid", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if f"api {queue}" in line]
    assert len(pids) == 1, listing
    subprocess.run(
        ["rabbitmqctl", "-q", "close_connection", pids[0], "test: connection cut"],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_after_its_connection_drops_the_api_asks_for_a_replay_of_what_it_missed(
    amqp_url: str, tmp_path: Path, silent_orchestra: Orchestra
) -> None:
    s = story(start=30_000)
    half = len(s.relayed) // 2
    replays = await silent_orchestra.spy([tag_of(ReplayRequested)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        first = await replays.next_request()
        assert isinstance(first, ReplayRequested)
        await replay(amqp_url, s.relayed[:half], first.reply_to, seed=1)
        await eventually(
            client, "{ readModel { rebuilding } }", lambda d: not d["readModel"]["rebuilding"]
        )
        _close_feed_connection(urlsplit(amqp_url).path.lstrip("/"), first.reply_to)
        await silent_orchestra.relay(s.relayed[half:])  # published while the api's queue is gone
        again = await asyncio.wait_for(replays.next_request(), 30)
        assert isinstance(again, ReplayRequested)
        assert again.reply_to == first.reply_to  # the same queue, declared again
        await replay(amqp_url, s.relayed, again.reply_to, seed=2)
        data = await eventually(
            client,
            "{ deployments { status } }",
            lambda d: len(d["deployments"]) == 5 and d["deployments"][0]["status"] == "CANCELLED",
        )
    assert [d["status"] for d in data["deployments"]] == [
        "CANCELLED",
        "RUNNING",
        "ERRORED",
        "RUNNING",
        "SUPERSEDED",
    ]
