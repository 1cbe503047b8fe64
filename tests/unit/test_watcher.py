"""The watcher: the ledger's baseline rule, one remote check per pair, RepoChanged."""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentInitialized,
    DeploymentProgressed,
    LedgerEntryRecorded,
    RepoChanged,
    Stage,
    Trigger,
    WebhookReceived,
)
from shipwreck_eventstore import StoreConfig
from shipwreck_watcher.domain import watched_repo_id
from shipwreck_watcher.poller import Poller
from shipwreck_watcher.remote import DulwichLister, RemoteError
from shipwreck_watcher.service import Watcher, WatcherService
from shipwreck_watcher.translate import translate
from tests.support.gitdaemon import GitServer
from tests.support.silentremote import SilentRemote

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
def silent() -> Iterator[SilentRemote]:
    with SilentRemote() as remote:
        yield remote


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
            if isinstance(m, RepoChanged):
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


def test_a_git_remote_is_listed_in_process(git_server: GitServer) -> None:
    commit = git_server.publish("listed", {"README.md": "hello\n"})
    lister = DulwichLister(allow_private=True, timeout=10)
    assert lister.head(git_server.url("listed"), "main") == commit
    assert lister.head(git_server.url("listed"), "no-such-branch") is None
    assert git_server.requests("listed") == 2


# A short timeout setting bounds each of these: a check that hangs fails the test.
@pytest.mark.timeout(30)
def test_a_git_remote_that_never_answers_fails_naming_it_and_the_timeout(
    silent: SilentRemote,
) -> None:
    lister = DulwichLister(allow_private=True, timeout=0.2)
    with pytest.raises(RemoteError) as failed:
        lister.head(silent.url("hangs"), "main")
    assert str(failed.value) == (
        f"cannot list {silent.url('hangs')}: no answer within 0.2 s "
        "(SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS)"
    )
    assert silent.connections == 1


@pytest.mark.timeout(30)
def test_an_ssh_remote_that_never_answers_fails_and_its_ssh_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for ssh: connected (or stuck connecting), and nothing ever comes back.
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text("#!/bin/sh\nwhile true; do sleep 0.1; done\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{ssh.parent}{os.pathsep}{os.environ['PATH']}")
    url = "ssh://git@127.0.0.1/hangs.git"
    lister = DulwichLister(allow_private=True, timeout=0.5)
    with pytest.raises(RemoteError) as failed:
        lister.head(url, "main")
    assert str(failed.value) == (
        f"cannot list {url}: no answer within 0.5 s (SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS)"
    )
    assert not _running(str(ssh))


def _running(command: str) -> list[int]:
    """The processes whose command line names ``command``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if command.encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.timeout(30)
async def test_a_silent_remote_frees_its_slot_and_is_checked_again_next_interval(
    service: WatcherService, silent: SilentRemote, caplog: pytest.LogCaptureFixture
) -> None:
    hangs, other = silent.url("hangs"), "git://example.org/other.git"
    _watch(service, "a", hangs)
    _watch(service, "b", other)
    fake = FakeRemote()
    fake.heads[(other, "main")] = "1" * 40
    dulwich = DulwichLister(allow_private=True, timeout=0.2)

    class Lister:
        def head(self, repo_url: str, branch: str) -> str | None:
            remote = dulwich if repo_url == hangs else fake
            return remote.head(repo_url, branch)

    clock = [0.0]
    # One slot, no jitter: the silent remote's check holds the only slot while it waits.
    poller = Poller(
        service, Lister(), interval=60, jitter=0, concurrency=1, monotonic=lambda: clock[0]
    )
    ids = {url: repo_id for repo_id, (url, _) in service.watched.items()}
    with caplog.at_level(logging.WARNING, logger="shipwreck_watcher.poller"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.check, ids[hangs])
            assert await anyio.to_thread.run_sync(silent.wait_for, 1, 10)
            tg.start_soon(poller.check, ids[other])
    assert fake.asked[(other, "main")] == 1  # the other pair got the slot back
    assert [r.getMessage() for r in caplog.records] == [
        f"watch check of {hangs}#main failed: cannot list {hangs}: no answer within 0.2 s "
        "(SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS)"
    ]
    clock[0] = 60.0
    assert set(poller.due_now(clock[0])) == {ids[hangs], ids[other]}
    assert await poller.check(ids[hangs]) is False
    assert silent.connections == 2


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


def _hook(
    delivery: str,
    url: str,
    ref: str = "refs/heads/main",
    commit: str | None = "2" * 40,
    verified: bool = True,
    **kw: object,
) -> WebhookReceived:
    fields: dict[str, object] = {
        "delivery_id": delivery,
        "provider": "github",
        "repo_url": url,
        "ref": ref,
        "commit": commit,
        "verified": verified,
        "received_at": AT,
    }
    fields.update(kw)
    return WebhookReceived(**fields)  # type: ignore[arg-type]


def _ledger(service: WatcherService) -> list[LedgerEntryRecorded]:
    out = []
    for n in service.app.process_recorder.select_notifications(1, 1000):
        for m in translate(service.app.mapper.to_domain_event(n)):
            if isinstance(m, LedgerEntryRecorded):
                out.append(m)
    return out


def test_a_signed_webhook_for_a_watched_branch_triggers_with_no_polling(
    service: WatcherService,
) -> None:
    url = "git://example.org/w.git"
    _watch(service, "w", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    # The payload may name the repository by another URL form.
    service.webhook(
        _hook("d-1", "https://example.org/w", repo_urls=["git@example.org:w.git"]), None
    )
    (change,) = _repo_changes(service)
    assert (change.commit, change.trigger, change.delivery_id) == ("2" * 40, Trigger.WEBHOOK, "d-1")
    assert _ledger(service)[-1].kind == "WEBHOOK_ACCEPTED"
    # The poll that follows sees the same head: nothing more.
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is False


def test_a_webhook_looks_only_at_the_pairs_of_its_repository(
    service: WatcherService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shipwreck_watcher.service as watcher_service

    for i in range(300):
        _watch(service, f"other-{i}", f"https://example.org/other-{i}.git")
    _watch(service, "w", "git://example.org/w.git")
    for i in range(20):  # the same repository on other branches
        service.app_watch_changed(
            AppWatchChanged(
                app=f"w-{i}",
                repo_url="git://example.org/w.git",
                branch=f"b{i}",
                watching=True,
                at=AT,
            ),
            None,
        )
    _watch(service, "gone", "https://example.org/gone.git")
    _watch(service, "gone", "https://example.org/gone.git", watching=False)
    normalised: list[str] = []
    original = watcher_service.repo_key

    def counting(url: str) -> str:
        normalised.append(url)
        return original(url)

    monkeypatch.setattr(watcher_service, "repo_key", counting)
    read: list[object] = []
    get = service.app.repository.get
    monkeypatch.setattr(
        service.app.repository, "get", lambda i, **kw: read.append(i) or get(i, **kw)
    )
    service.webhook(
        _hook("d-1", "https://example.org/w", repo_urls=["git@example.org:w.git"]), None
    )
    # Of the repository's 21 pairs, only the pushed branch's is loaded (and the delivery
    # looked up).
    other_branches = {watched_repo_id("git://example.org/w.git", f"b{i}") for i in range(20)}
    assert not other_branches & set(read)
    assert watched_repo_id("git://example.org/w.git", "main") in read
    assert _ledger(service)[-1].apps == ["w"]
    # A push to an unwatched branch loads none, and still names every app and branch.
    read.clear()
    service.webhook(_hook("d-2", "https://example.org/w", ref="refs/heads/dev"), None)
    assert not (other_branches | {watched_repo_id("git://example.org/w.git", "main")}) & set(read)
    rejected = _ledger(service)[-1]
    assert rejected.apps == sorted(["w", *(f"w-{i}" for i in range(20))])
    assert rejected.reason == "branch 'dev' is not watched (watched: {})".format(
        ", ".join(sorted(["main", *(f"b{i}" for i in range(20))]))
    )
    # The payloads' URL forms and the pair the first one moved, not every watched URL
    # (that cost 10,000 calls per webhook when 10,000 pairs were watched).
    assert sorted(normalised) == [
        "git://example.org/w.git",
        "git@example.org:w.git",
        "https://example.org/w",
        "https://example.org/w",
    ]
    assert [p.apps for p in service.pairs_of(["https://example.org/w"], "main")] == [{"w"}]
    assert service.pairs_of(["https://example.org/gone"]) == []
    (change,) = _repo_changes(service)
    assert change.repo_url == "git://example.org/w.git"


@pytest.mark.parametrize(
    ("hook", "reason"),
    [
        (
            _hook(
                "d-2",
                "git://example.org/w.git",
                verified=False,
                rejection="bad signature: X-Hub-Signature-256 does not match",
            ),
            "bad signature: X-Hub-Signature-256 does not match",
        ),
        (
            _hook("d-3", "git://example.org/w.git", ref="refs/heads/dev"),
            "branch 'dev' is not watched (watched: main)",
        ),
        (
            _hook("d-4", "git://example.org/w.git", ref="refs/tags/v1"),
            "'refs/tags/v1' is not a branch push",
        ),
        (
            _hook("d-5", "git://example.org/unknown.git"),
            "branch 'main' is not watched (no app watches this repository)",
        ),
    ],
    ids=["bad-signature", "branch-not-watched", "tag", "unknown-repo"],
)
def test_rejected_webhooks_are_recorded_with_the_reason(
    service: WatcherService, hook: WebhookReceived, reason: str
) -> None:
    _watch(service, "w", "git://example.org/w.git")
    service.webhook(hook, None)
    assert _repo_changes(service) == []
    entry = _ledger(service)[-1]
    assert (entry.kind, entry.reason, entry.delivery_id) == (
        "WEBHOOK_REJECTED",
        reason,
        hook.delivery_id,
    )


def test_a_repeated_delivery_is_recorded_and_triggers_nothing(service: WatcherService) -> None:
    url = "git://example.org/w.git"
    _watch(service, "w", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    service.webhook(_hook("d-9", url), None)
    service.webhook(_hook("d-9", url, commit="3" * 40), None)
    assert [c.commit for c in _repo_changes(service)] == ["2" * 40]
    last = _ledger(service)[-1]
    assert (last.kind, last.reason) == ("WEBHOOK_REJECTED", "duplicate delivery")
    assert last.apps == ["w"]


def test_a_webhook_before_any_poll_is_a_change_not_a_baseline(service: WatcherService) -> None:
    url = "git://example.org/early.git"
    _watch(service, "early", url)
    service.webhook(_hook("d-early", url), None)
    assert [c.commit for c in _repo_changes(service)] == ["2" * 40]


def test_every_webhook_entry_names_its_provider_and_trigger(service: WatcherService) -> None:
    url = "git://example.org/w.git"
    _watch(service, "w", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    service.webhook(_hook("p-1", url, verified=False), None)
    service.webhook(_hook("p-2", url), None)
    service.webhook(_hook("p-2", url), None)
    poll, *hooks = _ledger(service)
    assert (poll.kind, poll.trigger, poll.provider) == ("COMMIT_OBSERVED", Trigger.WATCH, None)
    assert [(e.kind, e.provider, e.trigger, e.branch) for e in hooks] == [
        ("WEBHOOK_REJECTED", "github", Trigger.WEBHOOK, "main"),
        ("WEBHOOK_ACCEPTED", "github", Trigger.WEBHOOK, "main"),
        ("WEBHOOK_REJECTED", "github", Trigger.WEBHOOK, "main"),  # the duplicate
    ]


def _rollback(
    app: str, url: str, commit: str, deployment: uuid.UUID | None = None
) -> DeploymentInitialized:
    return DeploymentInitialized(
        deployment_id=deployment or uuid.uuid4(),
        app=app,
        repo_url=url,
        branch="main",
        trigger=Trigger.ROLLBACK,
        commit=commit,
        at=AT,
    )


def test_a_rollback_pins_its_app_in_the_ledger_until_the_branch_moves(
    service: WatcherService,
) -> None:
    url = "git://example.org/r.git"
    _watch(service, "r", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    service.observe(url, "main", "2" * 40, Trigger.WATCH)
    rollback = _rollback("r", url, "1" * 40)
    assert service.rollback_started(rollback, None) is True
    pin = _ledger(service)[-1]
    assert (pin.kind, pin.commit, pin.apps, pin.trigger) == (
        "ROLLBACK_PINNED",
        "1" * 40,
        ["r"],
        Trigger.ROLLBACK,
    )
    assert pin.reason == (
        f"r rolled back to {'1' * 12}: the head {'2' * 12} is not deployed again "
        "until the branch moves"
    )
    # The same rollback announced again (its deployment rescheduled) pins once.
    service.rollback_started(rollback, None)
    assert [e.kind for e in _ledger(service)].count("ROLLBACK_PINNED") == 1
    # Polls keep seeing the head the app was rolled back from: nothing to deploy.
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is False
    # A webhook announcing that head again is rejected, and says why.
    service.webhook(_hook("again", url, commit="2" * 40), None)
    rejected = _ledger(service)[-1]
    assert (rejected.kind, rejected.reason) == (
        "WEBHOOK_REJECTED",
        f"commit pinned by a rollback (r runs {'1' * 12})",
    )
    # The next commit lifts the pin and deploys as usual.
    assert service.observe(url, "main", "3" * 40, Trigger.WATCH) is True
    assert [c.commit for c in _repo_changes(service)] == ["2" * 40, "3" * 40]
    service.webhook(_hook("late", url, commit="3" * 40), None)
    assert _ledger(service)[-1].reason == "commit already seen (no new deployment)"


def test_deployments_other_than_rollbacks_and_unwatched_apps_pin_nothing(
    service: WatcherService,
) -> None:
    url = "git://example.org/n.git"
    _watch(service, "n", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    manual = msgspec.structs.replace(_rollback("n", url, "1" * 40), trigger=Trigger.MANUAL)
    assert service.rollback_started(manual, None) is False
    service.rollback_started(_rollback("other", url, "1" * 40), None)
    service.rollback_started(_rollback("n", "git://example.org/unknown.git", "1" * 40), None)
    assert [e.kind for e in _ledger(service)] == ["COMMIT_OBSERVED"]


def test_deliveries_recorded_before_providers_were_kept_read_with_none(
    service: WatcherService,
) -> None:
    url = "git://example.org/old.git"
    _watch(service, "old", url)
    service.webhook(_hook("old-1", url, verified=False), None)
    # Rewrite the stored Rejected event as version 1 wrote it: no class_version, no provider.
    recorder = service.app.process_recorder
    (stored,) = [
        n for n in recorder.select_notifications(1, 100) if n.topic.endswith("Delivery.Rejected")
    ]
    state = msgspec.json.decode(stored.state)
    del state["class_version"], state["provider"]
    old = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=msgspec.json.encode(state),
    )
    event = service.app.mapper.to_domain_event(old)
    (entry,) = translate(event)
    assert isinstance(entry, LedgerEntryRecorded)
    assert (entry.kind, entry.provider, entry.delivery_id) == ("WEBHOOK_REJECTED", None, "old-1")


def _built(app: str, commit: str, deployment_id: uuid.UUID | None = None) -> DeploymentProgressed:
    return DeploymentProgressed(
        deployment_id=deployment_id or uuid.uuid4(),
        app=app,
        stage=Stage.BUILDING,
        node_id=uuid.uuid4(),
        commit=commit,
        at=AT,
    )


def test_a_commit_pushed_before_the_first_check_is_deployed_when_the_check_came_first(
    service: WatcherService,
) -> None:
    """The deploy that began the watch built 1; 2 was pushed before the first check."""
    url = "git://example.org/race.git"
    _watch(service, "race", url)
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True  # provisional
    assert _repo_changes(service) == []
    # The first deployment's build report settles the baseline on what it built, and
    # asks for a check of the pair at once.
    pair = service.deployment_built(_built("race", "1" * 40), None)
    assert pair == watched_repo_id(url, "main")
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True
    assert [(c.commit, c.previous) for c in _repo_changes(service)] == [("2" * 40, "1" * 40)]
    reasons = [(e.commit, e.reason) for e in _ledger(service)]
    assert reasons == [
        (
            "2" * 40,
            "provisional baseline (the head at the first check; the commit the first "
            "deployment builds settles it)",
        ),
        (
            "1" * 40,
            f"baseline: the commit race's first deployment built (the first check had seen "
            f"{'2' * 12}, which the next check deploys)",
        ),
        ("2" * 40, f"new commit after {'1' * 40}"),
    ]
    # Later builds settle nothing: the baseline is settled.
    assert service.deployment_built(_built("race", "1" * 40), None) is None
    assert service.unsettled == {}


def test_a_commit_pushed_before_the_first_check_is_deployed_when_the_build_came_first(
    service: WatcherService,
) -> None:
    url = "git://example.org/race2.git"
    _watch(service, "race2", url)
    assert service.deployment_built(_built("race2", "1" * 40), None) is None  # no check yet
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True
    assert [c.commit for c in _repo_changes(service)] == ["2" * 40]


def test_a_first_check_that_found_what_the_deployment_built_deploys_nothing(
    service: WatcherService,
) -> None:
    url = "git://example.org/same.git"
    _watch(service, "same", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    assert service.deployment_built(_built("same", "1" * 40), None) is None
    assert service.observe(url, "main", "1" * 40, Trigger.WATCH) is False
    assert _repo_changes(service) == []
    assert service.unsettled == {}


def test_a_rollback_build_never_settles_a_baseline(service: WatcherService) -> None:
    url = "git://example.org/rb.git"
    _watch(service, "rb", url)
    service.observe(url, "main", "2" * 40, Trigger.WATCH)
    rollback = _rollback("rb", url, "1" * 40)
    service.rollback_started(rollback, None)
    assert service.deployment_built(_built("rb", "1" * 40, rollback.deployment_id), None) is None
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is False


def test_unsettled_baselines_are_recovered_from_the_store(tmp_path: Path) -> None:
    url = "git://example.org/rec.git"
    first = Watcher(StoreConfig(state_dir=str(tmp_path)))
    before = WatcherService(first, clock=lambda: AT)
    _watch(before, "rec", url)
    before.observe(url, "main", "2" * 40, Trigger.WATCH)
    first.close()
    again = Watcher(StoreConfig(state_dir=str(tmp_path)))
    try:
        after = WatcherService(again, clock=lambda: AT)
        after.recover()
        assert after.unsettled == {"rec": watched_repo_id(url, "main")}
        assert after.deployment_built(_built("rec", "1" * 40), None) is not None
    finally:
        again.close()


def test_apps_leave_the_unsettled_index_of_a_pair_they_no_longer_watch(
    service: WatcherService,
) -> None:
    def by_pair() -> dict[uuid.UUID, set[str]]:
        inverse: dict[uuid.UUID, set[str]] = {}
        for app, pair in service.unsettled.items():
            inverse.setdefault(pair, set()).add(app)
        return inverse

    a, b = "git://example.org/a.git", "git://example.org/b.git"
    _watch(service, "one", a)
    _watch(service, "two", a)
    _watch(service, "three", b)
    assert (
        service.unsettled_on
        == by_pair()
        == {
            watched_repo_id(a, "main"): {"one", "two"},
            watched_repo_id(b, "main"): {"three"},
        }
    )
    _watch(service, "two", a, watching=False)
    _watch(service, "two", b)  # the app now watches the other repository
    assert service.unsettled_on == by_pair()
    assert service.unsettled["two"] == watched_repo_id(b, "main")
    service.observe(a, "main", "1" * 40, Trigger.WATCH)  # a provisional baseline
    service.deployment_built(_built("one", "1" * 40), None)  # settled by the first build
    assert "one" not in service.unsettled
    assert service.unsettled_on == by_pair() == {watched_repo_id(b, "main"): {"two", "three"}}


def test_a_rollback_from_a_commit_no_check_saw_is_not_undone_by_the_next_check(
    service: WatcherService,
) -> None:
    """1 was the head; 2 was deployed by hand before any check saw it; then the app was
    rolled back to 1, away from 2."""
    url = "git://example.org/hand.git"
    _watch(service, "hand", url)
    _watch(service, "other", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    service.deployment_built(_built("hand", "1" * 40), None)
    rollback = msgspec.structs.replace(_rollback("hand", url, "1" * 40), rolled_back_from="2" * 40)
    assert service.rollback_started(rollback, None) is True
    assert _ledger(service)[-1].reason == (
        f"hand rolled back to {'1' * 12}: {'2' * 12}, which it ran, is not deployed again "
        "until the branch moves"
    )
    # The check that finds 2 records it and holds the rolled-back app; the other app gets it.
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True
    (change,) = _repo_changes(service)
    assert (change.commit, change.held) == ("2" * 40, ["hand"])
    assert _ledger(service)[-1].reason == (
        f"new commit after {'1' * 40}; not deployed to hand (rolled back away from it)"
    )
    # A webhook for 2 names nothing new; the pin holds until the branch moves on.
    service.webhook(_hook("two", url, commit="2" * 40), None)
    assert _ledger(service)[-1].reason == "commit already seen (no new deployment)"
    assert service.observe(url, "main", "3" * 40, Trigger.WATCH) is True
    assert [(c.commit, c.held) for c in _repo_changes(service)][-1] == ("3" * 40, [])


def test_a_commit_every_watching_app_was_rolled_back_from_is_announced_to_none(
    service: WatcherService,
) -> None:
    url = "git://example.org/alone.git"
    _watch(service, "alone", url)
    service.observe(url, "main", "1" * 40, Trigger.WATCH)
    rollback = msgspec.structs.replace(_rollback("alone", url, "1" * 40), rolled_back_from="2" * 40)
    service.rollback_started(rollback, None)
    service.webhook(_hook("hand", url, commit="2" * 40), None)
    assert _ledger(service)[-1].reason == f"commit pinned by a rollback (alone runs {'1' * 12})"
    assert service.observe(url, "main", "2" * 40, Trigger.WATCH) is True
    assert _repo_changes(service) == []
