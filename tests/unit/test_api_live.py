"""Live updates: each status change reaches subscribers once; logs stream; the rebuild ends."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from shipwreck_api.errors import NotFound
from shipwreck_api.live import Live
from shipwreck_api.readmodel import DeploymentRecord
from shipwreck_contracts import (
    DeploymentStatus,
    LogLine,
    LogStream,
    ReplayFinished,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_story import T0, Log, Relayed, deployment, sha, story, superseded

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


# --- resuming, and subscribers that fall behind ---------------------------------------------------


async def test_a_subscriber_resuming_after_a_sequence_gets_exactly_what_it_missed() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    _feed(live, relayed[0])
    first = live.deployment_updates(d)
    seen = [await anext(first)]
    _feed(live, relayed[1])
    seen.append(await asyncio.wait_for(anext(first), 1))
    await first.aclose()  # the client went away after INITIALIZED
    for item in relayed[2:5]:  # SCHEDULED, CLONING, BUILDING meanwhile
        _feed(live, item)
    resumed = live.deployment_updates(d, after=seen[-1].sequence)
    task = asyncio.create_task(_collect(resumed))
    await _settle()
    _feed(live, relayed[5])  # ERRORED, live
    rest = await asyncio.wait_for(task, 1)
    statuses = [r.status for r in seen] + [r.status for r in rest]
    assert statuses == [S.REQUESTED, S.INITIALIZED, S.SCHEDULED, S.CLONING, S.BUILDING, S.ERRORED]
    sequences = [r.sequence for r in seen + rest]
    assert sequences == sorted(set(sequences))  # nothing twice


async def test_resuming_after_the_end_sends_nothing_and_ends() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.CANCELLED)
    for item in relayed:
        _feed(live, item)
    last = live.model.deployment(d)
    assert last is not None
    assert (
        await asyncio.wait_for(_collect(live.deployment_updates(d, after=last.sequence)), 1) == []
    )


async def test_a_subscriber_whose_queue_overflowed_still_gets_every_status_change() -> None:
    live = Live(queue_size=1)
    d, relayed = deployment(Log(), app="web")
    _feed(live, relayed[0])
    stream = live.deployment_updates(d)
    seen = [await anext(stream)]
    for item in relayed[1:]:  # it reads nothing meanwhile: its one-item queue overflows
        _feed(live, item)
    seen += await asyncio.wait_for(_collect_until(stream, S.RUNNING), 1)
    assert [r.status for r in seen] == [
        S.REQUESTED,
        S.INITIALIZED,
        S.SCHEDULED,
        S.CLONING,
        S.BUILDING,
        S.STARTING,
        S.RUNNING,
    ]
    assert [r.sequence for r in seen] == [1, 2, 3, 4, 5, 6, 7]
    await stream.aclose()


async def _collect_until(
    stream: AsyncIterator[DeploymentRecord], status: DeploymentStatus
) -> list[DeploymentRecord]:
    out = []
    async for record in stream:
        out.append(record)
        if record.status is status:
            return out
    return out


async def test_a_stuck_subscriber_stays_bounded_and_the_others_get_every_update() -> None:
    live = Live(log_queue_size=100)
    live.model.logs.max_lines = 500
    d, relayed = deployment(Log(), app="web")
    for item in relayed[:5]:  # BUILDING: ten thousand lines of build output follow
        _feed(live, item)
    stuck = live.deployment_logs(d)
    live.receive(_line(d, 0), {})
    assert (await anext(stuck)).sequence == 0  # ...and then it never reads again
    received = 0

    async def reader() -> None:
        nonlocal received
        async for line in live.deployment_logs(d, after=0):
            received += 1
            assert line.sequence == received  # every line, in order, once
            if line.sequence == 10_000:
                return

    task = asyncio.create_task(reader())
    await _settle()
    tracemalloc.start()
    try:
        growth = []
        for n in range(1, 10_001):
            live.receive(_line(d, n), {})
            if n % 50 == 0:
                await asyncio.sleep(0)  # the reader reads; the stuck one does not
            if n in (2_000, 10_000):
                growth.append(tracemalloc.get_traced_memory()[0])
        await asyncio.wait_for(task, 5)
    finally:
        tracemalloc.stop()
    assert received == 10_000
    (subscription,) = [s for s in live.logs._subscribers[d] if s._queue.qsize() > 0]
    assert subscription._queue.qsize() == 100  # the stuck one holds its bound, no more
    assert subscription.dropped == 10_000 - 100
    # 8,000 lines more changed nothing: the buffer and the queue are full and rotate.
    assert growth[1] - growth[0] < 200_000, growth
    await stuck.aclose()
    assert live.logs.subscriber_count() == 0


async def test_logs_resume_after_a_line_and_a_gap_is_said_not_hidden() -> None:
    live = Live()
    live.model.logs.max_lines = 3
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    for item in relayed:
        _feed(live, item)
    for n in range(6):
        live.receive(_line(d, n), {})
    resumed = await asyncio.wait_for(_collect(live.deployment_logs(d, after=1)), 1)
    assert [(x.stream, x.sequence) for x in resumed] == [
        (LogStream.SYSTEM, 2),
        (LogStream.BUILD, 3),
        (LogStream.BUILD, 4),
        (LogStream.BUILD, 5),
    ]
    assert resumed[0].text.startswith("1 earlier line dropped")
    after_notice = await asyncio.wait_for(_collect(live.deployment_logs(d, after=2)), 1)
    assert [x.sequence for x in after_notice] == [3, 4, 5]
    other_attempt = await asyncio.wait_for(_collect(live.deployment_logs(d, after=0, attempt=2)), 1)
    assert other_attempt == []


# --- app updates ------------------------------------------------------------------------------


async def test_app_updates_yield_the_app_at_each_status_change_of_its_deployments() -> None:
    live = Live()
    log_ = Log()
    old, a = deployment(log_, app="web", first=True)
    new, b = deployment(log_, app="web", commit=sha(2))
    for item in a:
        _feed(live, item)
    stream = live.app_updates("web")
    seen = [await anext(stream)]
    for item in b:
        _feed(live, item)
    _feed(live, superseded(log_, old, app="web", by=new))
    await _settle()
    while len(seen) < 8:
        seen.append(await asyncio.wait_for(anext(stream), 1))
    await stream.aclose()
    # The new deployment's REQUESTED names no app yet (the orchestrator binds it next).
    assert [a.current.id if a.current else None for a in seen] == [old] * 6 + [new] * 2
    assert [a.latest.status if a.latest else None for a in seen] == [
        S.RUNNING,  # now
        S.INITIALIZED,
        S.SCHEDULED,
        S.CLONING,
        S.BUILDING,
        S.STARTING,
        S.RUNNING,
        S.RUNNING,  # the old one SUPERSEDED: the app changed, its latest did not
    ]
    assert live.apps.subscriber_count() == 0


async def test_app_updates_of_an_unknown_app_are_not_found_once_rebuilt() -> None:
    live = Live(unknown_wait=0.05)
    live.receive(ReplayFinished(origin="orchestrator", last_position=0, at=T0), {})
    with pytest.raises(NotFound, match="no app named 'ghost'"):
        await _collect(live.app_updates("ghost"))


# --- rebuilding -------------------------------------------------------------------------------


async def test_rebuild_drops_the_model_and_answers_identically_once_replayed() -> None:
    live = Live()
    s = story()
    for item in s.relayed:
        _feed(live, item)
    before = (live.model.deployments(first=100), live.model.apps(), live.model.counts())
    replayed = list(s.relayed)
    random.Random(5).shuffle(replayed)

    async def replay() -> None:
        live.replay_requesting(T0)
        live.replay_requested()

        async def orchestrator() -> None:
            assert live.model.deployments() == []  # dropped
            for item in replayed:
                _feed(live, item)
                await asyncio.sleep(0)
            last = max(r.position for r in s.relayed)
            live.receive(ReplayFinished(origin="orchestrator", last_position=last, at=T0), {})

        asyncio.get_running_loop().create_task(orchestrator())

    outcome = await asyncio.wait_for(live.rebuild(replay, wait=5), 5)
    assert outcome.complete
    assert outcome.before == outcome.after == before[2]
    assert outcome.last_position == max(r.position for r in s.relayed)
    assert (live.model.deployments(first=100), live.model.apps(), live.model.counts()) == before
    assert not live.replay.rebuilding


async def test_rebuild_keeps_live_events_the_replay_did_not_cover() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web")
    for item in relayed:  # the last one was published live but not yet recorded by the relay
        _feed(live, item)

    async def replay() -> None:
        live.replay_requesting(T0)
        live.replay_requested()
        for item in relayed[:-1]:
            _feed(live, item)
        last = relayed[-2].position  # the replay stops at the relay's recorded position
        live.receive(ReplayFinished(origin="orchestrator", last_position=last, at=T0), {})

    outcome = await asyncio.wait_for(live.rebuild(replay, wait=5), 5)
    record = live.model.deployment(d)
    assert outcome.complete
    assert record is not None
    assert record.status is S.RUNNING
    assert record.sequence == len(relayed)


async def test_an_earlier_replays_answer_does_not_end_a_rebuild() -> None:
    live = Live()
    live.replay_requesting(T0)
    live.replay_requested()  # the start-up replay, not answered yet

    async def replay() -> None:
        live.replay_requesting(T0)
        live.replay_requested()
        finished = ReplayFinished(origin="orchestrator", last_position=0, at=T0)
        live.receive(finished, {})  # answers the start-up request
        assert live.replay.rebuilding
        live.receive(finished, {})  # answers the rebuild's

    outcome = await asyncio.wait_for(live.rebuild(replay, wait=5), 5)
    assert outcome.complete


async def test_a_rebuild_without_an_answer_says_so_after_its_wait() -> None:
    live = Live()
    for item in story().relayed:
        _feed(live, item)

    async def replay() -> None:
        live.replay_requesting(T0)
        live.replay_requested()

    outcome = await live.rebuild(replay, wait=0.05)
    assert not outcome.complete
    assert outcome.after.deployments == 0
    assert live.replay.rebuilding


async def test_a_replay_request_that_fails_keeps_the_model() -> None:
    live = Live()
    s = story()
    for item in s.relayed:
        _feed(live, item)
    live.receive(ReplayFinished(origin="orchestrator", last_position=33, at=T0), {})
    before = live.model.deployments(first=100)

    async def replay() -> None:
        raise ConnectionError("RabbitMQ is away")

    with pytest.raises(ConnectionError):
        await live.rebuild(replay, wait=1)
    assert live.model.deployments(first=100) == before
    assert live.replay.as_json()["state"] == "ready"  # as it was
    assert live.replay.last_position == 33


async def test_app_subscribers_see_no_half_rebuilt_apps_and_get_the_rebuilt_one() -> None:
    live = Live()
    s = story()
    for item in s.relayed:
        _feed(live, item)
    stream = live.app_updates("hello")
    now = await anext(stream)
    nxt = asyncio.create_task(anext(stream))

    async def replay() -> None:
        live.replay_requesting(T0)
        live.replay_requested()
        for item in s.relayed:  # refolding from nothing: hello goes through every state
            _feed(live, item)
        last = max(r.position for r in s.relayed)
        live.receive(ReplayFinished(origin="orchestrator", last_position=last, at=T0), {})

    await live.rebuild(replay, wait=5)
    after = await asyncio.wait_for(nxt, 1)
    assert after == now  # one update, the app as rebuilt: the same as before
    await _settle()
    assert live.apps.subscriber_count("hello") == 1
    await stream.aclose()
