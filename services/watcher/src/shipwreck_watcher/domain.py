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
        # A head only a poll has seen, before the deployment that began the watch said which
        # commit it built: that commit, not whatever the first poll found, is the baseline.
        self.provisional = False
        # Rolled-back apps: app -> (the commit it runs, the commits no poll or webhook
        # deploys to it again: the head when it was rolled back, and the commit it ran),
        # and every rollback deployment already pinned (a rescheduled one is announced again).
        self.pins: dict[str, tuple[str, frozenset[str]]] = {}
        self.rollbacks: set[uuid.UUID] = set()

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

        The first head a poll sees is a provisional baseline, not a change: the deploy that
        began the watch built the branch, and the commit it built settles the baseline
        (`settle`). A webhook is always news: the Git host says the branch moved. Apps
        rolled back away from ``commit`` are held: it is not deployed to them.
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
            held=sorted(self.pinned(commit)),
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
        held: list[str] | None = None,  # added later: events before it held no app
    ) -> None:
        self.head = commit
        self.provisional = baseline
        # The branch moved: every pin is lifted but those of apps rolled back away from
        # exactly this commit (they stay where they are until the branch moves on).
        self.pins = {app: pin for app, pin in self.pins.items() if commit in pin[1]}

    def settle(self, app: str, commit: str, at: datetime) -> bool:
        """The deployment that began ``app``'s watch built ``commit``: make it the baseline.

        Only while no baseline is settled (no poll yet, or only a provisional one) and only
        for an app watching this branch. True when the recorded head changed: a poll that
        had found a newer head took it for the baseline, and the next check deploys it.
        """
        if app not in self.apps or (self.head is not None and not self.provisional):
            return False
        moved = self.head is not None and self.head != commit
        self._baseline_settled(
            repo_url=self.repo_url,
            branch=self.branch,
            app=app,
            commit=commit,
            previous=self.head,
            apps=sorted(self.apps),
            at=at,
        )
        return moved

    @event("BaselineSettled")
    def _baseline_settled(
        self,
        repo_url: str,
        branch: str,
        app: str,
        commit: str,
        previous: str | None,
        apps: list[str],
        at: datetime,
    ) -> None:
        self.head = commit
        self.provisional = False

    def pin(
        self,
        app: str,
        commit: str,
        deployment_id: uuid.UUID,
        at: datetime,
        away_from: str | None = None,
    ) -> bool:
        """Record that ``app`` was rolled back to ``commit`` by deployment ``deployment_id``,
        away from ``away_from`` (the commit it ran, when known).

        No poll or webhook deploys the recorded head or ``away_from`` to the app again: the
        head does not move, so no check sees it as new and a webhook naming it is rejected;
        a commit the watcher has not seen yet (deployed by hand before any check) is
        recorded by the check that finds it, which holds the app. The next other commit
        lifts the pin and deploys as usual. An app that does not watch the branch has
        nothing to pin.
        """
        if deployment_id in self.rollbacks or app not in self.apps:
            return False
        self._rollback_pinned(
            repo_url=self.repo_url,
            branch=self.branch,
            app=app,
            commit=commit,
            head=self.head,
            deployment_id=deployment_id,
            at=at,
            away_from=away_from,
        )
        return True

    @event("RollbackPinned")
    def _rollback_pinned(
        self,
        repo_url: str,
        branch: str,
        app: str,
        commit: str,
        head: str | None,
        deployment_id: uuid.UUID,
        at: datetime,
        away_from: str | None = None,  # added later: earlier pins named only the head
    ) -> None:
        self.pins[app] = (commit, frozenset(c for c in (head, away_from) if c))
        self.rollbacks.add(deployment_id)

    def pinned(self, commit: str) -> dict[str, str]:
        """The rolled-back apps (and the commit each runs) that ``commit`` is not deployed to."""
        return {app: runs for app, (runs, away) in self.pins.items() if commit in away}


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
        self.trigger_event(
            self.Rejected,
            repo_url=self.repo_url,
            branch=branch,
            apps=apps,
            commit=self.commit,
            delivery_id=self.delivery,
            provider=self.provider,
            reason=reason,
            at=at,
        )

    class Rejected(Aggregate.Event):
        """Version 2 added ``provider``."""

        class_version = 2
        repo_url: str
        branch: str | None
        apps: list[str]
        commit: str | None
        delivery_id: str
        provider: str | None
        reason: str
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["provider"] = None  # not recorded before version 2

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Delivery)
            aggregate.outcome = f"rejected: {self.reason}"

    def accept(self, branch: str, apps: list[str], new: bool, at: datetime) -> None:
        """Record that this delivery announced ``commit`` on a watched branch."""
        self.trigger_event(
            self.Accepted,
            repo_url=self.repo_url,
            branch=branch,
            apps=apps,
            commit=self.commit,
            delivery_id=self.delivery,
            provider=self.provider,
            new=new,
            at=at,
        )

    class Accepted(Aggregate.Event):
        """Version 2 added ``provider``."""

        class_version = 2
        repo_url: str
        branch: str
        apps: list[str]
        commit: str | None
        delivery_id: str
        provider: str | None
        new: bool
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["provider"] = None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Delivery)
            aggregate.outcome = "accepted"

    def duplicate(self, apps: list[str], at: datetime) -> None:
        """The same delivery came again: it changes nothing, and the ledger says so."""
        self.trigger_event(
            self.DuplicateReceived,
            repo_url=self.repo_url,
            branch=self.ref.removeprefix("refs/heads/")
            if self.ref.startswith("refs/heads/")
            else None,
            apps=apps,
            commit=self.commit,
            delivery_id=self.delivery,
            provider=self.provider,
            at=at,
        )

    class DuplicateReceived(Aggregate.Event):
        """Version 2 added ``provider`` and ``branch``."""

        class_version = 2
        repo_url: str
        branch: str | None
        apps: list[str]
        commit: str | None
        delivery_id: str
        provider: str | None
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["provider"] = None
            state["branch"] = None

        def apply(self, aggregate: Aggregate) -> None:
            pass
