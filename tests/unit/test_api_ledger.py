"""The trigger ledger in the api: folded from the watcher's log in any order, bounded per
(repository, branch), shown per app, rebuilt from the watcher's replay."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from shipwreck_api.commands import Actions
from shipwreck_api.ledger import Ledger, LedgerRow
from shipwreck_api.live import Live
from shipwreck_api.schema import ApiContext, schema
from shipwreck_contracts import LedgerEntryRecorded, ReplayFinished, Trigger
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_actions import ListBus
from tests.unit.test_api_story import T0, Relayed, sha, story

pytestmark = pytest.mark.anyio

HELLO = "https://git.example.com/team/hello.git"  # the story's app "hello" deploys its main
WATCHER = "watcher"


def entry(
    n: int,
    *,
    kind: str = "COMMIT_OBSERVED",
    repo_url: str = HELLO,
    branch: str | None = "main",
    apps: tuple[str, ...] = ("hello",),
    reason: str = "",
    **fields: Any,
) -> Relayed:
    """The ``n``-th entry of the watcher's log (position ``n``, ``n`` seconds after T0)."""
    message = LedgerEntryRecorded(
        repo_url=repo_url,
        branch=branch,
        apps=list(apps),
        kind=kind,
        commit=sha(n),
        reason=reason or f"entry {n}",
        at=T0 + timedelta(seconds=n),
        **fields,
    )
    return Relayed(n, message, origin=WATCHER)


def _apply(ledger: Ledger, items: list[Relayed]) -> None:
    for item in items:
        assert isinstance(item.message, LedgerEntryRecorded)
        ledger.apply(item.message, origin=item.origin, position=item.position)


def _positions(rows: list[LedgerRow]) -> list[int]:
    return [r.position for r in rows]


def _hello(ledger: Ledger, limit: int = 100, **kw: Any) -> list[LedgerRow]:
    return ledger.for_app("hello", HELLO, "main", limit=limit, **kw)


def test_any_order_with_duplicates_gives_the_same_ledger_oldest_first() -> None:
    items = [entry(n) for n in range(1, 21)]
    in_order, shuffled = Ledger(), Ledger()
    _apply(in_order, items)
    mixed = items + items[:7]
    random.Random(4).shuffle(mixed)
    _apply(shuffled, mixed)
    assert _positions(_hello(in_order)) == list(range(1, 21))
    assert _hello(shuffled) == _hello(in_order)
    assert shuffled.count == 20


def test_each_pair_keeps_its_newest_entries_whatever_the_arrival_order() -> None:
    items = [entry(n) for n in range(1, 31)]
    other = [entry(n, branch="dev", apps=()) for n in range(31, 36)]
    shuffled = list(items)
    random.Random(9).shuffle(shuffled)
    ledger = Ledger(max_entries=10)
    _apply(ledger, shuffled + other)
    _apply(ledger, items)  # a replay of everything again: the rotated-out ones stay out
    assert _positions(_hello(ledger)) == list(range(21, 31))
    assert _positions(ledger.for_app("x", HELLO, "dev", limit=100)) == list(range(31, 36))
    assert ledger.count == 15


def test_an_app_sees_its_own_branch_and_the_entries_that_name_it() -> None:
    ledger = Ledger()
    _apply(
        ledger,
        [
            entry(1),
            # A push to another branch of its repository names the apps of that repository.
            entry(2, kind="WEBHOOK_REJECTED", branch="dev", reason="branch 'dev' is not watched"),
            entry(3, repo_url="https://git.example.com/team/other.git", apps=("other",)),
            entry(4, apps=()),  # its own pair, whoever else it names
            entry(5, kind="ROLLBACK_PINNED", apps=("hello",), trigger=Trigger.ROLLBACK),
        ],
    )
    rows = _hello(ledger)
    assert _positions(rows) == [1, 2, 4, 5]
    assert [r.accepted for r in rows] == [True, False, True, True]
    assert _positions(_hello(ledger, limit=2)) == [4, 5]  # the newest, oldest first
    assert _hello(ledger, limit=0) == []
    assert _positions(_hello(ledger, until=T0 + timedelta(seconds=2))) == [1, 2]


def _feed(live: Live, items: list[Relayed]) -> None:
    for item in items:
        live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})


async def test_live_folds_ledger_entries_only_with_their_log_position() -> None:
    live = Live()
    live.receive(entry(1).message, {})
    _feed(live, [entry(2), entry(2)])
    assert _positions(_hello(live.model.ledger)) == [2]
    assert live.model.counts().ledger_entries == 1


def _finished(origin: str, last: int) -> ReplayFinished:
    return ReplayFinished(origin=origin, last_position=last, at=T0)


async def test_a_rebuild_refills_the_ledger_from_the_watchers_replay() -> None:
    live = Live()
    s = story()
    ledger = [entry(n) for n in range(1, 11)]
    _feed(live, s.relayed)
    _feed(live, ledger)
    live.receive(_finished("orchestrator", len(s.relayed)), {})
    live.receive(_finished(WATCHER, 10), {})  # the watcher has answered this process
    before = _hello(live.model.ledger)

    async def replay() -> None:
        for origin in ("orchestrator", WATCHER):
            live.replay_requesting(T0, origin)
            live.replay_requested(origin)

        async def writers() -> None:
            assert live.model.ledger.count == 0  # dropped with the rest
            _feed(live, s.relayed)
            live.receive(_finished("orchestrator", max(r.position for r in s.relayed)), {})
            await asyncio.sleep(0.01)  # the ledger comes later than the deployments
            shuffled = list(ledger[:-1])
            random.Random(2).shuffle(shuffled)
            _feed(live, shuffled)
            # The last entry was published live but not yet recorded by the watcher's relay:
            # the replay stops before it, and the dropped model still has it.
            live.receive(_finished(WATCHER, 9), {})

        asyncio.get_running_loop().create_task(writers())

    outcome = await asyncio.wait_for(live.rebuild(replay, wait=5), 5)
    assert outcome.complete
    assert outcome.ledger_complete
    assert outcome.after == outcome.before
    assert _hello(live.model.ledger) == before
    assert not live.ledger_replay.rebuilding


async def test_a_rebuild_without_a_watcher_does_not_wait_for_one() -> None:
    live = Live()
    s = story()
    _feed(live, s.relayed)

    async def replay() -> None:
        for origin in ("orchestrator", WATCHER):
            live.replay_requesting(T0, origin)
            live.replay_requested(origin)
        _feed(live, s.relayed)
        live.receive(_finished("orchestrator", max(r.position for r in s.relayed)), {})

    outcome = await asyncio.wait_for(live.rebuild(replay, wait=5), 5)
    assert outcome.complete
    assert not outcome.ledger_complete
    assert live.ledger_replay.rebuilding  # it finishes if a watcher ever answers


LEDGER_QUERY = """query($name: String!, $limit: Int) { app(name: $name) { ledger(limit: $limit) {
  at kind accepted reason commit trigger deliveryId provider repoUrl branch apps position } } }"""


async def test_graphql_shows_an_apps_ledger_with_reasons() -> None:
    live = Live()
    _feed(live, story().relayed)
    _feed(
        live,
        [
            entry(1),
            entry(
                2,
                kind="WEBHOOK_REJECTED",
                reason="bad signature: X-Hub-Signature-256 does not match",
                delivery_id="d-1",
                provider="github",
                trigger=Trigger.WEBHOOK,
            ),
        ],
    )
    live.receive(ReplayFinished(origin="orchestrator", last_position=0, at=T0), {})
    context = {"api": ApiContext(live=live, actions=Actions(live, ListBus()), actor="test")}
    result = await schema.execute(
        LEDGER_QUERY, variable_values={"name": "hello", "limit": 1}, context_value=context
    )
    assert result.errors is None
    assert result.data == {
        "app": {
            "ledger": [
                {
                    "at": (T0 + timedelta(seconds=2)).isoformat(),
                    "kind": "WEBHOOK_REJECTED",
                    "accepted": False,
                    "reason": "bad signature: X-Hub-Signature-256 does not match",
                    "commit": sha(2),
                    "trigger": "WEBHOOK",
                    "deliveryId": "d-1",
                    "provider": "github",
                    "repoUrl": HELLO,
                    "branch": "main",
                    "apps": ["hello"],
                    "position": 2,
                }
            ]
        }
    }
