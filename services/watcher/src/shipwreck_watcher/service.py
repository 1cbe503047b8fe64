"""The watcher's decisions over the ledger (synchronous; runs in worker threads)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Notification, Tracking

from shipwreck_contracts import AppWatchChanged, Trigger
from shipwreck_eventstore import ShipwreckApplication, process_once
from shipwreck_watcher.domain import WatchedRepo, watched_repo_id


class Watcher(ShipwreckApplication):
    """The event-sourced application holding the WatchedRepo ledger."""

    name = "watcher"


class WatcherService:
    """Keeps the ledger: who watches what, and every commit seen."""

    def __init__(self, app: Watcher, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.app = app
        self.clock = clock
        # The pairs to poll, rebuilt from the store at start, and their last recorded heads:
        # an unchanged head (nearly every check) is then decided without reading the store.
        self.watched: dict[uuid.UUID, tuple[str, str]] = {}
        self.heads: dict[uuid.UUID, str | None] = {}

    def _get(self, repo_url: str, branch: str) -> WatchedRepo | None:
        try:
            found: object = self.app.repository.get(watched_repo_id(repo_url, branch))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, WatchedRepo) else None

    def _remember(self, repo: WatchedRepo) -> None:
        if repo.watched:
            self.watched[repo.id] = (repo.repo_url, repo.branch)
            self.heads[repo.id] = repo.head
        else:
            self.watched.pop(repo.id, None)
            self.heads.pop(repo.id, None)

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

        def decide() -> list[WatchedRepo]:
            changed.clear()
            repo = self._get(repo_url, branch)
            if repo is None or not repo.watched:
                return []
            if repo.observe(commit, trigger, delivery_id, self.clock()):
                changed.append(True)
                return [repo]
            return []

        process_once(self.app, None, decide)
        self.heads[repo_id] = commit
        return bool(changed)

    def recover(self) -> int:
        """Find the watched pairs in the store (at start-up)."""
        self.watched.clear()
        for notification in self._all_notifications():
            if notification.topic.endswith(":WatchedRepo.Registered"):
                repo: object = self.app.repository.get(uuid.UUID(str(notification.originator_id)))
                if isinstance(repo, WatchedRepo):
                    self._remember(repo)
        return len(self.watched)

    def _all_notifications(self) -> list[Notification]:
        out: list[Notification] = []
        start = 1
        while batch := self.app.process_recorder.select_notifications(start, 1000):
            out.extend(batch)
            start = batch[-1].id + 1
        return out
