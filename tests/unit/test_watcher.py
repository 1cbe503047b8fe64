"""The watcher: the ledger's baseline rule, one remote check per pair, RepoChanged."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipwreck_contracts import AppWatchChanged, RepoChanged, Trigger
from shipwreck_eventstore import StoreConfig
from shipwreck_watcher.poller import Poller
from shipwreck_watcher.service import Watcher, WatcherService
from shipwreck_watcher.translate import translate

pytestmark = pytest.mark.anyio
AT = datetime(2026, 5, 1, tzinfo=UTC)


class FakeRemote:
    """Branch heads by (url, branch), counting every question asked."""

    def __init__(self) -> None:
        self.heads: dict[tuple[str, str], str] = {}
        self.asked: Counter[tuple[str, str]] = Counter()

    def head(self, repo_url: str, branch: str) -> str | None:
        self.asked[(repo_url, branch)] += 1
        return self.heads.get((repo_url, branch))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[WatcherService]:
    app = Watcher(StoreConfig(state_dir=str(tmp_path)))
    yield WatcherService(app, clock=lambda: AT)
    app.close()


def _watch(service: WatcherService, app: str, url: str, watching: bool = True) -> None:
    service.app_watch_changed(
        AppWatchChanged(app=app, repo_url=url, branch="main", watching=watching, at=AT), None
    )


def _repo_changes(service: WatcherService) -> list[RepoChanged]:
    out: list[RepoChanged] = []
    for n in service.app.process_recorder.select_notifications(1, 1000):
        for m in translate(service.app.mapper.to_domain_event(n)):
            assert isinstance(m, RepoChanged)
            out.append(m)
    return out


def test_the_first_head_is_a_baseline_and_later_commits_are_changes(
    service: WatcherService,
) -> None:
    url = "git://example.org/a.git"
    _watch(service, "a", url)
    assert service.observe(url, "main", "1" * 40, Trigger.WATCH) is True
    assert service.observe(url, "main", "1" * 40, Trigger.WATCH) is False
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True
    changes = _repo_changes(service)
    assert [(c.commit, c.previous) for c in changes] == [("2" * 40, "1" * 40)]


def test_an_unwatched_branch_is_not_recorded(service: WatcherService) -> None:
    url = "git://example.org/b.git"
    _watch(service, "b", url)
    _watch(service, "b", url, watching=False)
    assert service.watched == {}
    assert service.observe(url, "main", "1" * 40, Trigger.WATCH) is False


async def test_fifty_apps_on_ten_pairs_cost_one_check_per_pair_per_interval(
    service: WatcherService,
) -> None:
    remote = FakeRemote()
    urls = [f"git://example.org/r{i}.git" for i in range(10)]
    for i in range(50):
        _watch(service, f"app-{i}", urls[i % 10])
    for url in urls:
        remote.heads[(url, "main")] = "1" * 40
    clock = [0.0]
    poller = Poller(service, remote, interval=60, jitter=0.1, monotonic=lambda: clock[0])
    asked_at: dict[str, list[float]] = {}
    # Ten whole intervals of simulated time, ticking every second.
    for second in range(0, 601):
        clock[0] = float(second)
        for repo_id in poller.due_now(clock[0]):
            url, _ = service.watched[repo_id]
            asked_at.setdefault(url, []).append(clock[0])
            await poller.check(repo_id)
    assert set(remote.asked) == {(u, "main") for u in urls}
    assert sum(remote.asked.values()) == poller.checks
    for url, times in asked_at.items():
        assert 9 <= len(times) <= 11, (url, times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # One check per interval, give or take the jitter (and the one-second tick).
        assert all(54 <= gap <= 67 for gap in gaps), (url, gaps)


async def test_a_new_commit_found_by_polling_becomes_repo_changed(
    service: WatcherService,
) -> None:
    remote = FakeRemote()
    url = "git://example.org/c.git"
    _watch(service, "c", url)
    remote.heads[(url, "main")] = "1" * 40
    poller = Poller(service, remote, interval=60)
    repo_id = next(iter(service.watched))
    assert await poller.check(repo_id) is True  # the baseline is a new head, not a change
    remote.heads[(url, "main")] = "2" * 40
    assert await poller.check(repo_id) is True
    (change,) = _repo_changes(service)
    assert (change.commit, change.trigger) == ("2" * 40, Trigger.WATCH)


def test_watched_pairs_are_recovered_from_the_store(tmp_path: Path) -> None:
    app = Watcher(StoreConfig(state_dir=str(tmp_path)))
    first = WatcherService(app, clock=lambda: AT)
    _watch(first, "x", "git://example.org/x.git")
    _watch(first, "y", "git://example.org/y.git")
    _watch(first, "y", "git://example.org/y.git", watching=False)
    again = WatcherService(app, clock=lambda: AT)
    assert again.recover() == 1
    assert list(again.watched.values()) == [("git://example.org/x.git", "main")]
    app.close()
