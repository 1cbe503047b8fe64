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

        The first head a poll sees is a baseline (the deploy that started the watch built
        it), not a change: only later commits trigger deployments. A webhook is always news:
        the Git host says the branch moved.
        """
        if commit == self.head:
            return False
        self._commit_observed(
            repo_url=self.repo_url,
            branch=self.branch,
            commit=commit,
            previous=self.head,
            baseline=self.head is None and trigger is Trigger.WATCH,
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


def repo_key(url: str) -> str:
    """A repository's identity across URL forms: host and path, lowercased, without
    scheme, user, port, ``.git`` or trailing slash (``git@h:o/r.git`` == ``https://h/o/r``)."""
    text = url.strip()
    if "://" in text:
        rest = text.split("://", 1)[1]
        host, _, path = rest.partition("/")
    else:  # scp-like user@host:path
        host, _, path = text.partition(":")
    host = host.rsplit("@", 1)[-1]
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    return f"{host.lower()}/{path.lower()}"


def delivery_id_of(provider: str, delivery_id: str) -> uuid.UUID:
    """The Delivery aggregate id of one webhook delivery."""
    return uuid.uuid5(NAMESPACE, f"delivery/{provider}/{delivery_id}")


class Delivery(Aggregate):
    """One webhook delivery and what the watcher made of it (dedupes redeliveries)."""

    @staticmethod
    def create_id(provider: str, delivery_id: str, **_: Any) -> uuid.UUID:
        return delivery_id_of(provider, delivery_id)

    @event("Received")
    def __init__(
        self,
        provider: str,
        delivery_id: str,
        repo_url: str,
        ref: str,
        commit: str | None,
        verified: bool,
        at: datetime,
    ) -> None:
        self.provider = provider
        self.delivery = delivery_id
        self.repo_url = repo_url
        self.ref = ref
        self.commit = commit
        self.outcome: str | None = None

    def reject(self, reason: str, branch: str | None, apps: list[str], at: datetime) -> None:
        """Record why this delivery triggers nothing."""
        self._rejected(
            repo_url=self.repo_url,
            branch=branch,
            apps=apps,
            commit=self.commit,
            delivery_id=self.delivery,
            reason=reason,
            at=at,
        )

    @event("Rejected")
    def _rejected(
        self,
        repo_url: str,
        branch: str | None,
        apps: list[str],
        commit: str | None,
        delivery_id: str,
        reason: str,
        at: datetime,
    ) -> None:
        self.outcome = f"rejected: {reason}"

    def accept(self, branch: str, apps: list[str], new: bool, at: datetime) -> None:
        """Record that this delivery announced ``commit`` on a watched branch."""
        self._accepted(
            repo_url=self.repo_url,
            branch=branch,
            apps=apps,
            commit=self.commit,
            delivery_id=self.delivery,
            new=new,
            at=at,
        )

    @event("Accepted")
    def _accepted(
        self,
        repo_url: str,
        branch: str,
        apps: list[str],
        commit: str | None,
        delivery_id: str,
        new: bool,
        at: datetime,
    ) -> None:
        self.outcome = "accepted"

    def duplicate(self, apps: list[str], at: datetime) -> None:
        """The same delivery came again: it changes nothing, and the ledger says so."""
        self._duplicate_received(
            repo_url=self.repo_url, apps=apps, commit=self.commit, delivery_id=self.delivery, at=at
        )

    @event("DuplicateReceived")
    def _duplicate_received(
        self, repo_url: str, apps: list[str], commit: str | None, delivery_id: str, at: datetime
    ) -> None:
        pass
