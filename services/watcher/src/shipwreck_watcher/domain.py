"""The trigger ledger: one WatchedRepo per (repository, branch), however many apps share it.

It records which apps watch the pair and every commit observed on it, so a user can see
exactly why a deployment was (or was not) triggered.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from shipwreck_contracts import Trigger

NAMESPACE = uuid.UUID("0b5e2f0c-8d2a-4a57-b0f3-7f5c8f2d9e41")


def watched_repo_id(repo_url: str, branch: str) -> uuid.UUID:
    """The WatchedRepo aggregate id of a (repository, branch) pair."""
    return uuid.uuid5(NAMESPACE, f"{repo_url}#{branch}")


class WatchedRepo(Aggregate):
    """Who watches a branch, and what the watcher saw on it."""

    @staticmethod
    def create_id(repo_url: str, branch: str, **_: Any) -> uuid.UUID:
        return watched_repo_id(repo_url, branch)

    @event("Registered")
    def __init__(self, repo_url: str, branch: str) -> None:
        self.repo_url = repo_url
        self.branch = branch
        self.apps: set[str] = set()
        self.head: str | None = None

    @property
    def watched(self) -> bool:
        """Whether any app watches this branch."""
        return bool(self.apps)

    def watch(self, app: str, watching: bool, at: datetime) -> bool:
        """Add or remove ``app`` from the watchers."""
        if watching == (app in self.apps):
            return False
        if watching:
            self._watched(app=app, at=at)
        else:
            self._unwatched(app=app, at=at)
        return True

    @event("Watched")
    def _watched(self, app: str, at: datetime) -> None:
        self.apps.add(app)

    @event("Unwatched")
    def _unwatched(self, app: str, at: datetime) -> None:
        self.apps.discard(app)

    def observe(self, commit: str, trigger: Trigger, delivery_id: str | None, at: datetime) -> bool:
        """Record the branch head ``commit``; True when it is new.

        The first head seen is a baseline (the deploy that started the watch built it), not
        a change: only later commits trigger deployments.
        """
        if commit == self.head:
            return False
        self._commit_observed(
            repo_url=self.repo_url,
            branch=self.branch,
            commit=commit,
            previous=self.head,
            baseline=self.head is None,
            trigger=trigger,
            delivery_id=delivery_id,
            apps=sorted(self.apps),
            at=at,
        )
        return True

    @event("CommitObserved")
    def _commit_observed(
        self,
        repo_url: str,
        branch: str,
        commit: str,
        previous: str | None,
        baseline: bool,
        trigger: Trigger,
        delivery_id: str | None,
        apps: list[str],
        at: datetime,
    ) -> None:
        self.head = commit
