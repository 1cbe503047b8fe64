"""The watcher's decisions over the ledger (synchronous; runs in worker threads)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Tracking

from shipwreck_contracts import (
    WATCHER_ORIGIN,
    AppWatchChanged,
    DeploymentInitialized,
    DeploymentProgressed,
    Trigger,
    WebhookReceived,
)
from shipwreck_eventstore import ShipwreckApplication, existing, process_once
from shipwreck_watcher.domain import (
    Delivery,
    WatchedRepo,
    delivery_id_of,
    repo_key,
    watched_repo_id,
)


class Watcher(ShipwreckApplication):
    """The event-sourced application holding the WatchedRepo ledger."""

    name = WATCHER_ORIGIN


class WatcherService:
    """Keeps the ledger: who watches what, and every commit seen."""

    def __init__(self, app: Watcher, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.app = app
        self.clock = clock
        # The pairs to poll, rebuilt from the store at start, and their last recorded heads:
        # an unchanged head (nearly every check) is then decided without reading the store.
        self.watched: dict[uuid.UUID, tuple[str, str]] = {}
        self.heads: dict[uuid.UUID, str | None] = {}
        # The watched pairs by repository identity (repo_key), in the order they were
        # watched: a webhook finds its pairs without normalising every watched URL.
        self.by_repo: dict[str, dict[uuid.UUID, None]] = {}
        # The apps on each watched pair: a webhook names every app of its repository in
        # the ledger, but loads only the pairs of the branch it pushed to.
        self.apps_on: dict[uuid.UUID, frozenset[str]] = {}
        # Watching apps whose branch has no settled baseline yet (app -> its pair), and
        # the rollback deployments seen: what a build report needs, without the store.
        self.unsettled: dict[str, uuid.UUID] = {}
        self.unsettled_on: dict[uuid.UUID, set[str]] = {}  # the same, by pair
        self.rollbacks: set[uuid.UUID] = set()

    def _get(self, repo_url: str, branch: str) -> WatchedRepo | None:
        try:
            found: object = self.app.repository.get(watched_repo_id(repo_url, branch))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, WatchedRepo) else None

    def _remember(self, repo: WatchedRepo) -> None:
        key = repo_key(repo.repo_url)
        if repo.watched:
            self.watched[repo.id] = (repo.repo_url, repo.branch)
            self.heads[repo.id] = repo.head
            self.by_repo.setdefault(key, {})[repo.id] = None
            self.apps_on[repo.id] = frozenset(repo.apps)
        else:
            self.watched.pop(repo.id, None)
            self.heads.pop(repo.id, None)
            self.apps_on.pop(repo.id, None)
            pairs = self.by_repo.get(key, {})
            pairs.pop(repo.id, None)
            if not pairs:
                self.by_repo.pop(key, None)
        for app in list(self.unsettled_on.get(repo.id, ())):
            if app not in repo.apps:  # it left this pair
                self._settled(app)
        for app in repo.apps:
            if repo.head is None or repo.provisional:
                self._unsettled(app, repo.id)
            elif self.unsettled.get(app) == repo.id:
                self._settled(app)

    def _unsettled(self, app: str, pair: uuid.UUID) -> None:
        self._settled(app)
        self.unsettled[app] = pair
        self.unsettled_on.setdefault(pair, set()).add(app)

    def _settled(self, app: str) -> None:
        pair = self.unsettled.pop(app, None)
        if pair is not None:
            apps = self.unsettled_on[pair]
            apps.discard(app)
            if not apps:
                del self.unsettled_on[pair]

    def app_watch_changed(self, msg: AppWatchChanged, tracking: Tracking | None) -> bool:
        """An app started or stopped watching its branch."""
        touched: list[WatchedRepo] = []

        def decide() -> list[WatchedRepo]:
            touched.clear()
            repo = self._get(msg.repo_url, msg.branch) or WatchedRepo(msg.repo_url, msg.branch)
            repo.watch(msg.app, msg.watching, msg.at)
            touched.append(repo)
            return [repo]

        recorded = process_once(self.app, tracking, decide)
        for repo in touched:
            self._remember(repo)
        return recorded

    def observe(
        self,
        repo_url: str,
        branch: str,
        commit: str,
        trigger: Trigger,
        delivery_id: str | None = None,
    ) -> bool:
        """Record the head of a watched branch; True when it is a new commit."""
        repo_id = watched_repo_id(repo_url, branch)
        if repo_id in self.heads and self.heads[repo_id] == commit:
            return False
        changed: list[bool] = []

        touched: list[WatchedRepo] = []

        def decide() -> list[WatchedRepo]:
            changed.clear()
            touched.clear()
            repo = self._get(repo_url, branch)
            if repo is None or not repo.watched:
                return []
            if repo.observe(commit, trigger, delivery_id, self.clock()):
                changed.append(True)
                touched.append(repo)
                return [repo]
            return []

        process_once(self.app, None, decide)
        self.heads[repo_id] = commit
        for repo in touched:
            self._remember(repo)
        return bool(changed)

    def pair_ids_of(self, urls: list[str]) -> list[uuid.UUID]:
        """The watched pairs of a repository known by any of ``urls`` (from memory)."""
        keys = dict.fromkeys(repo_key(u) for u in urls)
        return [repo_id for key in keys for repo_id in self.by_repo.get(key, ())]

    def pairs_of(self, urls: list[str], branch: str | None = None) -> list[WatchedRepo]:
        """The watched pairs of a repository known by any of ``urls`` (on ``branch``)."""
        return self._pairs(self.pair_ids_of(urls), branch)

    def _pairs(self, pair_ids: list[uuid.UUID], branch: str | None) -> list[WatchedRepo]:
        found = []
        for repo_id in pair_ids:
            if branch is None or self.watched[repo_id][1] == branch:
                repo: object = self.app.repository.get(repo_id)
                if isinstance(repo, WatchedRepo):
                    found.append(repo)
        return found

    def webhook(self, msg: WebhookReceived, tracking: Tracking | None) -> bool:
        """Record a push webhook in the ledger, and observe its commit when it counts.

        Rejected, with the reason in the ledger: a repeated delivery, a bad signature, a
        push that is not to a branch, a branch no app watches, no commit in the payload, a
        commit that rolled-back apps were pinned away from.
        """
        observed: list[tuple[str, str, str]] = []

        def decide() -> list[Any]:
            observed.clear()
            now = self.clock()
            pair_ids = self.pair_ids_of([msg.repo_url, *msg.repo_urls])
            apps_of_repo = sorted({a for i in pair_ids for a in self.apps_on.get(i, ())})
            # Nearly every delivery is new: see existing() for how that costs no read.
            earlier = existing(self.app, delivery_id_of(msg.provider, msg.delivery_id))
            if isinstance(earlier, Delivery):
                earlier.duplicate(apps_of_repo, now)
                return [earlier]
            delivery = Delivery(
                provider=msg.provider,
                delivery_id=msg.delivery_id,
                repo_url=msg.repo_url,
                ref=msg.ref,
                commit=msg.commit,
                verified=msg.verified,
                at=msg.received_at,
            )
            branch = (
                msg.ref.removeprefix("refs/heads/") if msg.ref.startswith("refs/heads/") else None
            )
            if not msg.verified:
                delivery.reject(msg.rejection or "bad signature", branch, apps_of_repo, now)
                return [delivery]
            if branch is None:
                delivery.reject(f"{msg.ref!r} is not a branch push", None, apps_of_repo, now)
                return [delivery]
            matching = self._pairs(pair_ids, branch)
            if not matching:
                watched = sorted({self.watched[i][1] for i in pair_ids})
                reason = f"branch {branch!r} is not watched" + (
                    f" (watched: {', '.join(watched)})"
                    if watched
                    else " (no app watches this repository)"
                )
                delivery.reject(reason, branch, apps_of_repo, now)
                return [delivery]
            if msg.commit is None:
                delivery.reject("the payload names no commit", branch, apps_of_repo, now)
                return [delivery]
            pins = [p.pinned(msg.commit) for p in matching]
            if all(set(pin) >= p.apps for pin, p in zip(pins, matching, strict=True)):
                held = ", ".join(f"{a} runs {c[:12]}" for pin in pins for a, c in pin.items())
                reason = f"commit pinned by a rollback ({held})"
                delivery.reject(reason, branch, sorted({a for p in matching for a in p.apps}), now)
                return [delivery]
            moved: list[WatchedRepo] = []
            for pair in matching:
                if pair.observe(msg.commit, Trigger.WEBHOOK, msg.delivery_id, now):
                    moved.append(pair)
                    observed.append((pair.repo_url, pair.branch, msg.commit))
            delivery.accept(branch, sorted({a for p in matching for a in p.apps}), bool(moved), now)
            # The moved branches first: their repo.changed is then the first message the relay
            # sends (the delivery's ledger entry follows, from the same transaction).
            return [*moved, delivery]

        recorded = process_once(self.app, tracking, decide)
        for url, branch, _commit in observed:
            repo = self._get(url, branch)
            if repo is not None:
                self._remember(repo)
        return recorded

    def rollback_started(self, msg: DeploymentInitialized, tracking: Tracking | None) -> bool:
        """A rollback deployment was accepted: pin its app on its watched branch, so that
        the head it rolled back from is not deployed again (and the ledger says so)."""
        commit = msg.commit
        if msg.trigger is not Trigger.ROLLBACK or commit is None:
            return False

        def decide() -> list[WatchedRepo]:
            repo = self._get(msg.repo_url, msg.branch)
            if repo is None or not repo.pin(
                msg.app, commit, msg.deployment_id, msg.at, msg.rolled_back_from
            ):
                return []
            return [repo]

        recorded = process_once(self.app, tracking, decide)
        self.rollbacks.add(msg.deployment_id)
        return recorded

    def may_settle(self, msg: DeploymentProgressed) -> bool:
        """Whether a build report can settle a baseline (decided in memory)."""
        return (
            msg.commit is not None
            and msg.app in self.unsettled
            and msg.deployment_id not in self.rollbacks
        )

    def deployment_built(
        self, msg: DeploymentProgressed, tracking: Tracking | None
    ) -> uuid.UUID | None:
        """A deployment resolved its commit: the first one of a watching app settles the
        baseline of its branch. Returns the pair to check at once when the head the watcher
        had recorded moved back to it (a poll had seen a newer head first).

        Nearly every report is decided in memory (only branches without a settled
        baseline care, and never about a rollback's build).
        """
        commit = msg.commit
        repo_id = self.unsettled.get(msg.app)
        if commit is None or repo_id is None or not self.may_settle(msg):
            return None
        touched: list[WatchedRepo] = []
        moved: list[bool] = []

        def decide() -> list[WatchedRepo]:
            touched.clear()
            moved.clear()
            repo: object = self.app.repository.get(repo_id)
            if not isinstance(repo, WatchedRepo):
                return []
            moved.append(repo.settle(msg.app, commit, msg.at))
            if not repo.pending_events:
                return []
            touched.append(repo)
            return [repo]

        recorded = process_once(self.app, tracking, decide)
        for repo in touched:
            self._remember(repo)
        return repo_id if recorded and any(moved) else None

    def recover(self) -> int:
        """Find the watched pairs in the store (at start-up)."""
        self.watched.clear()
        self.heads.clear()
        self.by_repo.clear()
        self.apps_on.clear()
        self.unsettled.clear()
        self.unsettled_on.clear()
        self.rollbacks.clear()
        for notification in self.app.all_notifications():
            if notification.topic.endswith(":WatchedRepo.Registered"):
                repo: object = self.app.repository.get(uuid.UUID(str(notification.originator_id)))
                if isinstance(repo, WatchedRepo):
                    self._remember(repo)
                    self.rollbacks |= repo.rollbacks  # later ones: rollback_started
        return len(self.watched)
