"""Live updates: each status change reaches subscribers once; logs stream; the rebuild ends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from shipwreck_api.errors import NotFound
from shipwreck_api.live import Live
from shipwreck_contracts import (
    DeploymentStatus,
    LogLine,
    LogStream,
    ReplayFinished,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_story import T0, Log, Relayed, deployment

pytestmark = pytest.mark.anyio
S = DeploymentStatus
T = TypeVar("T")


def _feed(live: Live, item: Relayed) -> None:
    live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})


async def _collect(stream: AsyncIterator[T]) -> list[T]:
    return [x async for x in stream]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _line(d: uuid.UUID, sequence: int) -> LogLine:
    return LogLine(
        deployment_id=d, stream=LogStream.BUILD, sequence=sequence, text=f"#{sequence}", at=T0
    )


async def test_each_status_change_reaches_a_subscriber_once_and_terminal_ends_it() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    task = asyncio.create_task(_collect(live.deployment_updates(d)))
    await _settle()
    for item in relayed:
        _feed(live, item)
        _feed(live, item)  # a duplicate announces nothing
        await _settle()
    records = await asyncio.wait_for(task, 1)
    assert [r.status for r in records] == [
        S.REQUESTED,
        S.INITIALIZED,
        S.SCHEDULED,
        S.CLONING,
        S.BUILDING,
        S.ERRORED,
    ]
    assert records[-1].error is not None
    assert live.updates.subscriber_count() == 0


async def test_a_late_subscriber_starts_from_the_current_state() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.CANCELLED)
    for item in relayed:
        _feed(live, item)
    records = await asyncio.wait_for(_collect(live.deployment_updates(d)), 1)
    assert [r.status for r in records] == [S.CANCELLED]


async def test_one_update_is_computed_once_for_many_subscribers() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    tasks = [asyncio.create_task(_collect(live.deployment_updates(d))) for _ in range(20)]
    await _settle()
    for item in relayed:
        _feed(live, item)
        await _settle()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert all(r == results[0] for r in results)
    # The same record objects, not a copy per subscriber.
    assert all(a is b for r in results for a, b in zip(r, results[0], strict=True))


async def test_an_unknown_deployment_is_not_found_once_the_read_model_is_rebuilt() -> None:
    live = Live(unknown_wait=0.05)
    live.receive(ReplayFinished(origin="orchestrator", last_position=0, at=T0), {})
    with pytest.raises(NotFound, match="no deployment with id"):
        await _collect(live.deployment_updates(uuid.uuid4()))


async def test_while_rebuilding_an_unknown_deployment_is_waited_for() -> None:
    live = Live(unknown_wait=0.01)
    d, relayed = deployment(Log(), app="web", outcome=S.CANCELLED)
    task = asyncio.create_task(_collect(live.deployment_updates(d)))
    await asyncio.sleep(0.05)  # several waits have passed: still rebuilding, still waiting
    assert not task.done()
    for item in relayed:
        _feed(live, item)
    assert [r.status for r in await asyncio.wait_for(task, 1)][-1] is S.CANCELLED


async def test_replay_finished_ends_the_rebuild() -> None:
    live = Live()
    assert live.replay.as_json()["state"] == "rebuilding"
    live.receive(ReplayFinished(origin="someone-else", last_position=9, at=T0), {})
    assert live.replay.rebuilding
    live.receive(ReplayFinished(origin="orchestrator", last_position=42, at=T0), {})
    assert live.replay.as_json()["state"] == "ready"
    assert live.replay.last_position == 42


async def test_events_without_their_log_position_are_ignored() -> None:
    live = Live()
    _, relayed = deployment(Log(), app="web")
    live.receive(relayed[0].message, {})
    assert live.model.deployments() == []


async def test_undecodable_bodies_are_ignored() -> None:
    live = Live()
    live.receive_raw(b"not json", {})
    live.receive_raw(b'{"type": "deployment.requested.v1"}', {})
    assert live.model.deployments() == []


async def test_logs_give_the_lines_so_far_then_live_ones_and_end_after_terminal() -> None:
    live = Live()
    live.log_grace = 0.05
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    for item in relayed[:-1]:
        _feed(live, item)
    live.receive(_line(d, 1), {})
    live.receive(_line(d, 0), {})
    task = asyncio.create_task(_collect(live.deployment_logs(d)))
    await _settle()
    live.receive(_line(d, 2), {})
    live.receive(_line(d, 2), {})  # redelivered: not sent twice
    _feed(live, relayed[-1])  # ERRORED
    await _settle()
    live.receive(_line(d, 3), {})  # arrives just after the status: still sent
    lines = await asyncio.wait_for(task, 1)
    assert [line.sequence for line in lines] == [0, 1, 2, 3]


async def test_logs_of_a_finished_deployment_are_the_kept_lines() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.CANCELLED)
    for item in relayed:
        _feed(live, item)
    live.receive(_line(d, 0), {})
    lines = await asyncio.wait_for(_collect(live.deployment_logs(d)), 1)
    assert [line.text for line in lines] == ["#0"]


async def test_logs_wait_for_a_deployment_whose_lines_come_first() -> None:
    live = Live(unknown_wait=1)
    d = uuid.uuid4()
    stream = live.deployment_logs(d)
    first = asyncio.create_task(anext(stream))
    await _settle()
    live.receive(_line(d, 0), {})
    assert (await asyncio.wait_for(first, 1)).sequence == 0
    await stream.aclose()  # what the GraphQL server does when the client unsubscribes
    assert live.logs.subscriber_count() == 0
