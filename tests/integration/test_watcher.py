"""The watcher process on RabbitMQ and PostgreSQL, polling a real git daemon on loopback.

It is told who watches what the way the orchestrator's relay tells it (``AppWatchChanged``
on the events exchange, with origin and position headers), and what it asks the remote is
counted in the daemon's own log: one "Request upload-pack" line per ref listing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue

from shipwreck_contracts import (
    AnyMessage,
    AppWatchChanged,
    LedgerEntryRecorded,
    ReplayFinished,
    ReplayRequested,
    RepoChanged,
    Trigger,
)
from shipwreck_messaging import (
    ORIGIN_HEADER,
    POSITION_HEADER,
    create_broker,
    events_exchange,
    publish,
)
from tests.support.gitdaemon import GitServer
from tests.support.platform import Platform
from tests.support.silentremote import SilentRemote

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]

INTERVAL = 2.0  # SHIPWRECK_WATCH_INTERVAL: seconds between two checks of one pair
JITTER = 0.1
PAIRS = 10
APPS = 50


class Observer:
    """What the watcher announces (``repo.*``), and the answers to our replay requests."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.messages: list[Any] = []
        self.replies: list[Any] = []
        self.changed = asyncio.Event()
        self.reply_queue = f"watcher-test-replies-{uuid.uuid4().hex[:8]}"
        announced = RabbitQueue(
            f"watcher-test-{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
            routing_key="repo.#",
        )
        replies = RabbitQueue(self.reply_queue, exclusive=True, auto_delete=True)

        @broker.subscriber(announced, events_exchange())
        async def on_announced(msg: AnyMessage) -> None:
            self.messages.append(msg)
            self.changed.set()

        @broker.subscriber(replies)
        async def on_reply(msg: AnyMessage) -> None:
            self.replies.append(msg)
            self.changed.set()

    def of(self, cls: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, cls)]

    async def wait(self, condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
        async def loop() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(loop(), seconds)
        except TimeoutError:
            raise AssertionError(f"no {what} within {seconds:g} s") from None


async def replay(broker: RabbitBroker, observer: Observer) -> list[Any]:
    """Ask the watcher to replay its log to us; what it replayed (every message it has
    announced so far), once it says it has finished."""
    start = len(observer.replies)
    await publish(
        broker,
        ReplayRequested(
            origin="watcher", reply_to=observer.reply_queue, requested_at=datetime.now(UTC)
        ),
    )
    await observer.wait(
        lambda: any(isinstance(m, ReplayFinished) for m in observer.replies[start:]),
        "answer to the replay request",
    )
    return [m for m in observer.replies[start:] if not isinstance(m, ReplayFinished)]


async def checked(git: GitServer, repo: str, times: int, seconds: float = 60) -> None:
    """Wait until the daemon has been asked for ``repo`` ``times`` times in all."""
    deadline = time.monotonic() + seconds
    while git.requests(repo) < times:
        if time.monotonic() > deadline:
            raise AssertionError(f"{repo} asked for {git.requests(repo)} times, not {times}")
        await asyncio.sleep(0.1)


async def test_fifty_apps_on_ten_pairs_cost_one_check_per_pair_per_interval(
    platform: Platform, git_server: GitServer
) -> None:
    repos = [f"pair-{i}" for i in range(PAIRS)]
    heads = {repo: git_server.publish(repo, {"README.md": f"{repo}\n"}) for repo in repos}
    watchers = {
        repo: [f"app-{a}" for a in range(APPS) if a % PAIRS == i] for i, repo in enumerate(repos)
    }
    broker = create_broker(platform.amqp_url, app_id="test")
    observer = Observer(broker)
    platform.start(
        "watcher",
        "shipwreck_watcher",
        "watcher ready",
        SHIPWRECK_WATCH_INTERVAL=str(INTERVAL),
        SHIPWRECK_WATCH_JITTER=str(JITTER),
    )
    async with broker:
        await broker.start()
        at = datetime.now(UTC)
        for position, a in enumerate(range(APPS), start=1):
            repo = repos[a % PAIRS]
            await publish(
                broker,
                AppWatchChanged(
                    app=f"app-{a}",
                    repo_url=git_server.url(repo),
                    branch="main",
                    watching=True,
                    at=at,
                ),
                headers={ORIGIN_HEADER: "orchestrator", POSITION_HEADER: position},
            )
        # The watcher handles its queue in order: once it answers a replay request sent
        # after the fifty, all fifty apps are recorded.
        await replay(broker, observer)

        def baselines() -> set[str]:
            return {e.repo_url for e in observer.of(LedgerEntryRecorded) if "baseline" in e.reason}

        await observer.wait(
            lambda: baselines() == {git_server.url(r) for r in repos}, "baseline of every pair"
        )
        # Every pair is polled now, on behalf of five apps each: count what reaches the
        # remote over three intervals.
        before = {repo: git_server.requests(repo) for repo in repos}
        started = time.monotonic()
        await asyncio.sleep(3 * INTERVAL)
        window = time.monotonic() - started
        during = {repo: git_server.requests(repo) - before[repo] for repo in repos}
        # Three checks each, give or take one at the window's edges and the jitter; a
        # check per app would be fifteen.
        assert all(2 <= n <= 4 for n in during.values()), (window, during)

        # A commit pushed to one pair is announced once, for the five apps watching it.
        pushed = repos[3]
        commit = git_server.publish(pushed, {"README.md": "a new commit\n"})
        await observer.wait(lambda: bool(observer.of(RepoChanged)), "repo.changed")
        # Two more checks of that pair find the same head: nothing more to announce. The
        # replay holds everything the watcher has announced (not only what reached us yet).
        await checked(git_server, pushed, git_server.requests(pushed) + 2)
        replayed = await replay(broker, observer)
    assert [m for m in replayed if isinstance(m, RepoChanged)] == observer.of(RepoChanged)
    (change,) = observer.of(RepoChanged)
    assert (change.repo_url, change.branch) == (git_server.url(pushed), "main")
    assert (change.commit, change.previous) == (commit, heads[pushed])
    assert change.trigger is Trigger.WATCH
    (entry,) = [e for e in observer.of(LedgerEntryRecorded) if e.commit == commit]
    assert entry.reason == f"new commit after {heads[pushed]}"
    assert sorted(entry.apps) == sorted(watchers[pushed])


async def test_a_remote_that_never_answers_does_not_hold_the_only_check_slot(
    platform: Platform, git_server: GitServer
) -> None:
    heads = {"answers": git_server.publish("answers", {"README.md": "answers\n"})}
    broker = create_broker(platform.amqp_url, app_id="test")
    observer = Observer(broker)
    with SilentRemote() as silent:
        hangs, answers = silent.url("hangs"), git_server.url("answers")
        # One check at a time, every second: the silent remote must give the slot back
        # after its timeout, every interval, for the other pair to be checked at all.
        platform.start(
            "watcher",
            "shipwreck_watcher",
            "watcher ready",
            SHIPWRECK_WATCH_INTERVAL="1",
            SHIPWRECK_WATCH_JITTER="0",
            SHIPWRECK_WATCH_CONCURRENCY="1",
            SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS="0.5",
        )
        async with broker:
            await broker.start()
            at = datetime.now(UTC)
            for position, (app, url) in enumerate([("hangs", hangs), ("answers", answers)], 1):
                await publish(
                    broker,
                    AppWatchChanged(app=app, repo_url=url, branch="main", watching=True, at=at),
                    headers={ORIGIN_HEADER: "orchestrator", POSITION_HEADER: position},
                )
            await observer.wait(
                lambda: any(e.repo_url == answers for e in observer.of(LedgerEntryRecorded)),
                "baseline of the pair that answers",
            )
            await checked(git_server, "answers", 3)
        # The silent remote was asked again at each interval, not once and forever.
        assert await asyncio.to_thread(silent.wait_for, 3, 30)
    (baseline,) = observer.of(LedgerEntryRecorded)
    assert (baseline.repo_url, baseline.commit) == (answers, heads["answers"])
    log = platform.logs["watcher"].read_text()
    assert (
        f"watch check of {hangs}#main failed: cannot list {hangs}: no answer within 0.5 s "
        "(SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS)"
    ) in log
