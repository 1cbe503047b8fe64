"""The orchestrator's aggregates: Deployment and App. It is their only writer.

Every change is an ``@event`` method; the public methods check the invariants first and
return whether anything changed, so a redelivered or stale message changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from shipwreck_contracts import IN_PROGRESS_STATUSES, DeploymentStatus, NodeScore, Stage, Trigger

S = DeploymentStatus
IN_PROGRESS = IN_PROGRESS_STATUSES
_STAGE_ORDER = {
    s: i
    for i, s in enumerate(
        [
            S.REQUESTED,
            S.INITIALIZED,
            S.SCHEDULED,
            S.CLONING,
            S.BUILDING,
            S.TESTING,
            S.STARTING,
            S.RUNNING,
        ]
    )
}
APP_NAMESPACE = uuid.UUID("6f1c3a52-3c64-4f4e-9a43-5b0c1f3c2a10")


class Deployment(Aggregate):
    """One attempt to run one commit of an app, from request to a terminal status."""

    @staticmethod
    def create_id(deployment_id: uuid.UUID, **_: Any) -> uuid.UUID:
        # The api chooses the id, so a redelivered request finds the deployment it created.
        return deployment_id

    @event("Requested")
    def __init__(
        self,
        deployment_id: uuid.UUID,
        repo_url: str,
        branch: str,
        watch: bool,
        trigger: Trigger,
        actor: str,
        app: str | None,
        commit: str | None,
        requested_at: datetime,
        image: str | None = None,
        rollback_of: uuid.UUID | None = None,
    ) -> None:
        # ``image`` and ``rollback_of`` are set for rollbacks: run an earlier build again.
        self.rollback_of = rollback_of
        self.repo_url = repo_url
        self.branch = branch
        self.watch = watch
        self.trigger = trigger
        self.actor = actor
        self.app = app
        self.commit = commit
        self.requested_at = requested_at
        self.status = S.REQUESTED
        self.status_since = requested_at
        self.node_id: uuid.UUID | None = None
        self.attempt = 0
        self.url: str | None = None
        self.image: str | None = image
        self.error: str | None = None

    @property
    def in_progress(self) -> bool:
        """Not yet RUNNING nor terminal."""
        return self.status in IN_PROGRESS

    # --- acceptance and placement ---------------------------------------------------------

    def accept(self, app: str, at: datetime, rolled_back_from: str | None = None) -> bool:
        """REQUESTED -> INITIALIZED under ``app``, and ask for a node (attempt 1).

        A rollback names the commit the app ran until then (``rolled_back_from``).
        """
        if self.status is not S.REQUESTED:
            return False
        # Events carry what their integration messages announce (denormalised on purpose:
        # the relay translates one event at a time, and the stored timeline reads whole).
        self._initialized(
            app=app,
            repo_url=self.repo_url,
            branch=self.branch,
            trigger=self.trigger,
            commit=self.commit,
            at=at,
            rolled_back_from=rolled_back_from,
        )
        self._placement_requested(app=app, attempt=1, at=at)
        return True

    @event("Initialized")
    def _initialized(
        self,
        app: str,
        repo_url: str,
        branch: str,
        trigger: Trigger,
        commit: str | None,
        at: datetime,
        rolled_back_from: str | None = None,  # added later; earlier events named none
    ) -> None:
        self.app = app
        self._move(S.INITIALIZED, at)

    @event("PlacementRequested")
    def _placement_requested(self, app: str, attempt: int, at: datetime) -> None:
        self.attempt = attempt

    def schedule(
        self, node_id: uuid.UUID, attempt: int, scores: list[NodeScore], at: datetime
    ) -> bool:
        """INITIALIZED -> SCHEDULED on ``node_id``, for the current placement attempt only."""
        if self.status is not S.INITIALIZED or attempt != self.attempt:
            return False
        self._scheduled(
            app=self.app or "",
            node_id=node_id,
            attempt=attempt,
            scores=scores,
            repo_url=self.repo_url,
            branch=self.branch,
            commit=self.commit,
            requested_at=self.requested_at,
            image=self.image,
            at=at,
        )
        return True

    @event("Scheduled")
    def _scheduled(
        self,
        app: str,
        node_id: uuid.UUID,
        attempt: int,
        scores: list[NodeScore],
        repo_url: str,
        branch: str,
        commit: str | None,
        requested_at: datetime,
        at: datetime,
        image: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.scores = scores
        self._move(S.SCHEDULED, at)

    def reschedule(self, lost_node: uuid.UUID, at: datetime) -> bool:
        """Its node was lost: place it again (next attempt, avoiding that node).

        Work in progress there is abandoned; a RUNNING deployment gets a new container on
        another node. Reports of the old attempt are stale from now on (fencing).
        """
        if self.node_id != lost_node:
            return False
        if not (self.in_progress or self.status is S.RUNNING):
            return False
        self._rescheduled(
            app=self.app or "",
            lost_node=lost_node,
            previous=self.status,
            attempt=self.attempt + 1,
            repo_url=self.repo_url,
            branch=self.branch,
            trigger=self.trigger,
            commit=self.commit,
            at=at,
        )
        return True

    @event("Rescheduled")
    def _rescheduled(
        self,
        app: str,
        lost_node: uuid.UUID,
        previous: DeploymentStatus,
        attempt: int,
        repo_url: str,
        branch: str,
        trigger: Trigger,
        commit: str | None,
        at: datetime,
    ) -> None:
        self.node_id = None
        self.attempt = attempt
        self._move(
            S.INITIALIZED,
            at,
            f"node {lost_node} lost while {previous}; rescheduling (attempt {attempt})",
        )

    def displace(self, node_id: uuid.UUID, attempt: int, reason: str, at: datetime) -> bool:
        """Its node can no longer run it (RUNNING there, but its container is gone for good):
        place it again, as after the loss of a node, with the next attempt.

        Only a report of the current attempt from the node it runs on counts: a late one
        from a node it has left since changes nothing.
        """
        if self.status is not S.RUNNING or self.node_id != node_id or self.attempt != attempt:
            return False
        self._displaced(
            app=self.app or "",
            node_id=node_id,
            reason=reason,
            attempt=self.attempt + 1,
            repo_url=self.repo_url,
            branch=self.branch,
            trigger=self.trigger,
            commit=self.commit,
            at=at,
        )
        return True

    @event("Displaced")
    def _displaced(
        self,
        app: str,
        node_id: uuid.UUID,
        reason: str,
        attempt: int,
        repo_url: str,
        branch: str,
        trigger: Trigger,
        commit: str | None,
        at: datetime,
    ) -> None:
        self.node_id = None
        self.attempt = attempt
        self._move(
            S.INITIALIZED,
            at,
            f"node {node_id} can no longer run it: {reason}; placing it again (attempt {attempt})",
        )

    # --- node reports ---------------------------------------------------------------------

    def _current(self, node_id: uuid.UUID, attempt: int) -> bool:
        # A report from another node or an older attempt is stale (that work was abandoned).
        return self.node_id == node_id and self.attempt == attempt and self.in_progress

    def progress(
        self,
        node_id: uuid.UUID,
        attempt: int,
        stage: Stage,
        commit: str | None,
        message: str,
        at: datetime,
    ) -> bool:
        """Record that the node reached ``stage``; never moves backwards."""
        if not self._current(node_id, attempt):
            return False
        if _STAGE_ORDER[stage.status] <= _STAGE_ORDER[self.status]:
            return False
        self._progressed(
            app=self.app or "",
            node_id=node_id,
            stage=stage,
            commit=commit or self.commit,
            message=message,
            at=at,
        )
        return True

    @event("Progressed")
    def _progressed(
        self,
        app: str,
        node_id: uuid.UUID,
        stage: Stage,
        commit: str | None,
        message: str,
        at: datetime,
    ) -> None:
        self.commit = commit
        self._move(stage.status, at, message)

    def succeed(
        self,
        node_id: uuid.UUID,
        attempt: int,
        commit: str,
        url: str,
        image: str,
        container_id: str,
        warnings: list[str],
        at: datetime,
    ) -> bool:
        """The node serves the deployment: RUNNING."""
        if not self._current(node_id, attempt):
            return False
        self._running(
            app=self.app or "",
            node_id=node_id,
            commit=commit,
            url=url,
            image=image,
            container_id=container_id,
            warnings=warnings,
            at=at,
        )
        return True

    @event("Running")
    def _running(
        self,
        app: str,
        node_id: uuid.UUID,
        commit: str,
        url: str,
        image: str,
        container_id: str,
        warnings: list[str],
        at: datetime,
    ) -> None:
        self.commit = commit
        self.url = url
        self.image = image
        self.container_id = container_id
        self.warnings = warnings
        self._move(S.RUNNING, at)

    def fail(
        self,
        reason: str,
        at: datetime,
        *,
        node_id: uuid.UUID | None = None,
        attempt: int | None = None,
        commit: str | None = None,
    ) -> bool:
        """End ERRORED at the current status, with ``reason`` (for people, no secrets)."""
        if node_id is not None and not self._current(node_id, attempt or 0):
            return False
        if not self.in_progress:
            return False
        self._errored(
            app=self.app,
            node_id=self.node_id,
            attempt=self.attempt,
            stage=self.status,
            reason=reason,
            commit=commit or self.commit,
            at=at,
        )
        return True

    @event("Errored")
    def _errored(
        self,
        app: str | None,
        node_id: uuid.UUID | None,
        attempt: int,
        stage: DeploymentStatus,
        reason: str,
        commit: str | None,
        at: datetime,
    ) -> None:
        self.commit = commit
        self.error = reason
        self._move(S.ERRORED, at, reason)

    # --- user and platform decisions ------------------------------------------------------

    def cancel(self, actor: str, reason: str, at: datetime) -> bool:
        """Stop an in-progress deployment: CANCELLED.

        A cancel that arrives once the deployment has finished (it was accepted while the
        deployment was under way, and the deployment won the race) is refused, and the
        refusal is recorded, so the user who asked learns why nothing was cancelled.
        """
        if self.status is S.CANCELLED:
            return False  # cancelled already: a second cancel changes nothing
        if not self.in_progress:
            self._cancel_refused(
                app=self.app,
                status=self.status,
                actor=actor,
                reason=(
                    f"cancel by {actor} refused: the deployment was already "
                    f"{self.status.value} when it arrived"
                ),
                at=at,
            )
            return True
        self._cancelled(
            app=self.app,
            node_id=self.node_id,
            attempt=self.attempt,
            stage=self.status,
            actor=actor,
            reason=reason,
            at=at,
        )
        return True

    @event("Cancelled")
    def _cancelled(
        self,
        app: str | None,
        node_id: uuid.UUID | None,
        attempt: int,
        stage: DeploymentStatus,
        actor: str,
        reason: str,
        at: datetime,
    ) -> None:
        self._move(S.CANCELLED, at, reason or f"cancelled by {actor}")

    @event("CancelRefused")
    def _cancel_refused(
        self, app: str | None, status: DeploymentStatus, actor: str, reason: str, at: datetime
    ) -> None:
        pass  # nothing changes: the story records that the cancel came too late

    def supersede(self, by: uuid.UUID, at: datetime) -> bool:
        """A newer deployment of the app took over: SUPERSEDED."""
        if self.status is not S.RUNNING:
            return False
        self._superseded(app=self.app or "", node_id=self.node_id, by=by, at=at)
        return True

    @event("Superseded")
    def _superseded(self, app: str, node_id: uuid.UUID | None, by: uuid.UUID, at: datetime) -> None:
        self.superseded_by = by
        self._move(S.SUPERSEDED, at, f"superseded by {by}")

    def stop(self, actor: str, reason: str, at: datetime) -> bool:
        """The app was stopped: STOPPED."""
        if self.status is not S.RUNNING:
            return False
        self._stopped(app=self.app or "", node_id=self.node_id, actor=actor, reason=reason, at=at)
        return True

    @event("Stopped")
    def _stopped(
        self, app: str, node_id: uuid.UUID | None, actor: str, reason: str, at: datetime
    ) -> None:
        self._move(S.STOPPED, at, reason or f"stopped by {actor}")

    def _move(self, status: DeploymentStatus, at: datetime, message: str = "") -> None:
        self.status = status
        self.status_since = at
        self.status_message = message


class App(Aggregate):
    """An app: its source, whether it is watched, and which deployment serves it."""

    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return app_id(name)

    @event("Created")
    def __init__(self, name: str, repo_url: str, branch: str, watching: bool, at: datetime) -> None:
        self.name = name
        self.repo_url = repo_url
        self.branch = branch
        self.watching = watching
        self.current: uuid.UUID | None = None

    def activate(self, deployment_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        """Make ``deployment_id`` current; return the one it replaces (if any)."""
        previous = self.current
        if previous == deployment_id:
            return None
        self._activated(deployment_id=deployment_id, previous=previous, at=at)
        return previous

    @event("Activated")
    def _activated(
        self, deployment_id: uuid.UUID, previous: uuid.UUID | None, at: datetime
    ) -> None:
        self.current = deployment_id

    def deactivate(self, at: datetime) -> uuid.UUID | None:
        """The app stops: no deployment serves it; return the one that did."""
        previous = self.current
        if previous is None:
            return None
        self._deactivated(previous=previous, at=at)
        return previous

    @event("Deactivated")
    def _deactivated(self, previous: uuid.UUID, at: datetime) -> None:
        self.current = None

    def set_watch(self, watching: bool, at: datetime) -> bool:
        """Turn watching the branch on or off."""
        if watching == self.watching:
            return False
        self._watch_changed(
            app=self.name, repo_url=self.repo_url, branch=self.branch, watching=watching, at=at
        )
        return True

    @event("WatchChanged")
    def _watch_changed(
        self, app: str, repo_url: str, branch: str, watching: bool, at: datetime
    ) -> None:
        self.watching = watching


class RepoIndex(Aggregate):
    """Which apps deploy a (repository, branch) pair. The first is the pair's default app
    (named after the repository); more apps can deploy the same branch under own names."""

    @staticmethod
    def create_id(repo_url: str, branch: str, **_: Any) -> uuid.UUID:
        return repo_index_id(repo_url, branch)

    @event("Created")
    def __init__(self, repo_url: str, branch: str) -> None:
        self.repo_url = repo_url
        self.branch = branch
        self.apps: list[str] = []

    def add(self, app: str) -> bool:
        """Record that ``app`` deploys this pair."""
        if app in self.apps:
            return False
        self._app_added(app=app)
        return True

    @event("AppAdded")
    def _app_added(self, app: str) -> None:
        self.apps.append(app)


def app_id(name: str) -> uuid.UUID:
    """The App aggregate id of ``name``."""
    return uuid.uuid5(APP_NAMESPACE, f"app/{name}")


def repo_index_id(repo_url: str, branch: str) -> uuid.UUID:
    """The RepoIndex aggregate id of a (repository, branch) pair."""
    return uuid.uuid5(APP_NAMESPACE, f"repo/{repo_url}#{branch}")
