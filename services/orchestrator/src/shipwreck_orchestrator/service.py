"""The orchestrator's decisions: each message becomes at most one transaction of events.

Methods are synchronous (eventsourcing is) and run in a worker thread. Each reads current
state, lets the aggregates decide, and records the result through ``process_once``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Tracking

from shipwreck_contracts import (
    ORCHESTRATOR_ORIGIN,
    CancelDeployment,
    DeploymentStatus,
    NodeLost,
    NodeRegistered,
    NodeReturned,
    PlacementDecided,
    PlacementFailed,
    RepoChanged,
    RequestDeployment,
    RollbackApp,
    SetAppWatch,
    StageReported,
    StopApp,
    Trigger,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
)
from shipwreck_contracts.gitpolicy import (
    RefusedRemote,
    app_name_from_url,
    check_branch,
    check_repo_url,
)
from shipwreck_eventstore import ShipwreckApplication, existing, process_once
from shipwreck_orchestrator.domain import IN_PROGRESS, App, Deployment, RepoIndex, app_id
from shipwreck_orchestrator.domain import repo_index_id as _repo_index_id
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_orchestrator.workload import Workload, assignment, workload_id

log = logging.getLogger(__name__)
S = DeploymentStatus
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Refusal:
    """Why a request cannot be accepted (it ends ERRORED with this reason)."""

    reason: str


class Orchestrator(ShipwreckApplication):
    """The event-sourced application holding Deployment, App and RepoIndex aggregates."""

    name = ORCHESTRATOR_ORIGIN


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OrchestratorService:
    """Applies commands and reports to the aggregates; the only writer of them."""

    def __init__(
        self,
        app: Orchestrator,
        settings: OrchestratorSettings,
        *,
        clock: Clock = _utcnow,
        resolve: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self.resolve = resolve
        self.timeouts = {
            S.REQUESTED: settings.timeout_initialized_seconds,
            S.INITIALIZED: settings.timeout_initialized_seconds,
            S.SCHEDULED: settings.timeout_scheduled_seconds,
            S.CLONING: settings.timeout_cloning_seconds,
            S.BUILDING: settings.timeout_building_seconds,
            S.TESTING: settings.timeout_testing_seconds,
            S.STARTING: settings.timeout_starting_seconds,
        }
        # Deployments not yet RUNNING or terminal: what the sweeper watches. Rebuilt from
        # the store at start (see recover_in_progress), kept current by this writer.
        self.in_progress: set[uuid.UUID] = set()

    # --- helpers --------------------------------------------------------------------------

    def _get(self, aggregate_id: uuid.UUID) -> Any | None:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _deployment(self, deployment_id: uuid.UUID) -> Deployment | None:
        found = self._get(deployment_id)
        return found if isinstance(found, Deployment) else None

    def _peek(self, deployment_id: uuid.UUID) -> Deployment | None:
        """A deployment to look at, never to change: the cached object itself.

        A read for a change gets a deep copy of the cached aggregate (so a change that is not
        saved leaves no trace). The sweep looks at every deployment in progress every few
        seconds: with 1,500 of them the copies took 50-77 ms of CPU on the two-core machine
        of docs/BENCHMARKS.md, and every message in flight waited meanwhile.
        """
        try:
            found: object = self.app.repository.get(deployment_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Deployment) else None

    def _track(self, deployment: Deployment) -> None:
        if deployment.in_progress:
            self.in_progress.add(deployment.id)
        else:
            self.in_progress.discard(deployment.id)

    def _refusal(self, repo_url: str, branch: str) -> str | None:
        try:
            kwargs: dict[str, Any] = {"allow_private": self.settings.git_allow_private}
            if self.resolve is not None:
                kwargs["resolve"] = self.resolve
            check_repo_url(repo_url, **kwargs)
            check_branch(branch)
        except RefusedRemote as e:
            return str(e)
        return None

    # --- commands -------------------------------------------------------------------------

    def request_deployment(self, cmd: RequestDeployment, tracking: Tracking | None) -> bool:
        """Create the deployment; accept it (INITIALIZED, placement requested) or refuse it."""
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            if existing(self.app, cmd.deployment_id) is not None:
                return []  # a redelivered request
            now = self.clock()
            deployment = Deployment(
                deployment_id=cmd.deployment_id,
                repo_url=cmd.repo_url,
                branch=cmd.branch,
                watch=cmd.watch,
                trigger=cmd.trigger,
                actor=cmd.actor,
                app=cmd.app,
                commit=cmd.commit,
                requested_at=cmd.requested_at,
            )
            touched.append(deployment)
            refusal = self._refusal(cmd.repo_url, cmd.branch)
            if refusal is not None:
                deployment.fail(refusal, now)
                return [deployment]
            name, new = self._app_for(cmd, now)
            if isinstance(name, Refusal):
                deployment.fail(name.reason, now)
                return [deployment]
            deployment.accept(name, now)
            return [deployment, *new]

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        return recorded

    def _app_for(self, cmd: RequestDeployment, now: datetime) -> tuple[str | Refusal, list[Any]]:
        """The app this request deploys, and the aggregates to create or change for it."""
        index = self._get(_repo_index_id(cmd.repo_url, cmd.branch))
        if cmd.app is not None:
            existing = self._get(app_id(cmd.app))
            if isinstance(existing, App):
                if (existing.repo_url, existing.branch) != (cmd.repo_url, cmd.branch):
                    return Refusal(
                        f"app {cmd.app!r} deploys {existing.repo_url} branch "
                        f"{existing.branch!r}, not {cmd.repo_url} branch {cmd.branch!r}; "
                        "choose another app name"
                    ), []
                return cmd.app, []
            return cmd.app, self._new_app(cmd.app, cmd, index, now)
        if isinstance(index, RepoIndex) and index.apps:
            return index.apps[0], []
        # The first deploy of a (repository, branch) names the app after the repository;
        # another repository with the same name gets the first free "-2", "-3", ...
        base = app_name_from_url(cmd.repo_url)
        name, n = base, 1
        while self._get(app_id(name)) is not None:
            n += 1
            suffix = f"-{n}"
            name = base[: 63 - len(suffix)].rstrip("-") + suffix
        return name, self._new_app(name, cmd, index, now)

    def _new_app(self, name: str, cmd: RequestDeployment, index: Any, now: datetime) -> list[Any]:
        app = App(name=name, repo_url=cmd.repo_url, branch=cmd.branch, watching=cmd.watch, at=now)
        if not isinstance(index, RepoIndex):
            index = RepoIndex(repo_url=cmd.repo_url, branch=cmd.branch)
        index.add(name)
        return [app, index]

    def repo_changed(self, msg: RepoChanged, tracking: Tracking | None) -> bool:
        """A watched branch moved: deploy the new commit for every app watching it.

        The deployment id is derived from (app, commit), so the same commit seen by a poll
        and a webhook, or delivered twice, deploys once.
        """
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            index = self._get(_repo_index_id(msg.repo_url, msg.branch))
            if not isinstance(index, RepoIndex):
                return []
            changed: list[Any] = []
            now = self.clock()
            for name in index.apps:
                app = self._get(app_id(name))
                if not isinstance(app, App) or not app.watching or name in msg.held:
                    continue  # not watching, or rolled back away from this very commit
                deployment_id = uuid.uuid5(app.id, f"commit/{msg.commit}")
                if existing(self.app, deployment_id) is not None:
                    continue  # this commit of this app was seen already (a poll, a webhook)
                current = self._deployment(app.current) if app.current else None
                if current is not None and current.commit == msg.commit:
                    continue  # already serving this commit (deployed by hand, or rolled back)
                deployment = Deployment(
                    deployment_id=deployment_id,
                    repo_url=msg.repo_url,
                    branch=msg.branch,
                    watch=True,
                    trigger=msg.trigger,
                    actor=f"system:{msg.trigger.lower()}",
                    app=name,
                    commit=msg.commit,
                    requested_at=msg.detected_at,
                )
                deployment.accept(name, now)
                touched.append(deployment)
                changed.append(deployment)
            return changed

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        return recorded

    def rollback(self, cmd: RollbackApp, tracking: Tracking | None) -> bool:
        """Run an earlier deployment's build of the app again (trigger ROLLBACK).

        It goes through placement and the same zero-downtime takeover as any deployment.
        It names the commit the app ran until then: the watcher pins the app away from it,
        so no poll or webhook undoes the rollback; a newer commit deploys normally.
        """
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            if existing(self.app, cmd.new_deployment_id) is not None:
                return []
            target = self._deployment(cmd.deployment_id)
            now = self.clock()
            deployment = Deployment(
                deployment_id=cmd.new_deployment_id,
                repo_url=target.repo_url if target else "",
                branch=target.branch if target else "",
                watch=True,
                trigger=Trigger.ROLLBACK,
                actor=cmd.actor,
                app=cmd.app,
                commit=target.commit if target else None,
                requested_at=cmd.requested_at,
                image=target.image if target else None,
                rollback_of=cmd.deployment_id,
            )
            touched.append(deployment)
            if target is None or target.app != cmd.app:
                deployment.fail(
                    f"deployment {cmd.deployment_id} is not a deployment of app {cmd.app!r}", now
                )
            elif target.image is None or target.commit is None:
                deployment.fail(
                    f"deployment {cmd.deployment_id} never ran ({target.status}): only a "
                    "deployment that reached RUNNING can be rolled back to",
                    now,
                )
            else:
                app = self._get(app_id(cmd.app))
                current = (
                    self._deployment(app.current) if isinstance(app, App) and app.current else None
                )
                deployment.accept(
                    cmd.app, now, rolled_back_from=current.commit if current else None
                )
            return [deployment]

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        return recorded

    def cancel(self, cmd: CancelDeployment, tracking: Tracking | None) -> bool:
        """Cancel an in-progress deployment."""
        return self._on_deployment(
            cmd.deployment_id,
            tracking,
            lambda d: d.cancel(cmd.actor, cmd.reason, self.clock()),
        )

    def stop_app(self, cmd: StopApp, tracking: Tracking | None) -> bool:
        """Stop the app: its current deployment ends STOPPED and nothing serves it."""
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            app = self._get(app_id(cmd.app))
            if not isinstance(app, App):
                log.info("stop of unknown app %s ignored", cmd.app)
                return []
            now = self.clock()
            previous = app.deactivate(now)
            if previous is None:
                return []
            deployment = self._deployment(previous)
            if deployment is not None and deployment.stop(cmd.actor, cmd.reason, now):
                touched.append(deployment)
                return [app, deployment]
            return [app]

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        return recorded

    def set_watch(self, cmd: SetAppWatch, tracking: Tracking | None) -> bool:
        """Turn watching an app's branch on or off."""

        def decide() -> list[Any]:
            app = self._get(app_id(cmd.app))
            if isinstance(app, App) and app.set_watch(cmd.watching, self.clock()):
                return [app]
            return []

        return process_once(self.app, tracking, decide)

    # --- the scheduler's and nodes' reports -----------------------------------------------

    def placement_decided(self, msg: PlacementDecided, tracking: Tracking | None) -> bool:
        """The scheduler chose a node: SCHEDULED (work goes to that node via the outbox)."""
        return self._on_deployment(
            msg.deployment_id,
            tracking,
            lambda d: d.schedule(msg.node_id, msg.attempt, list(msg.scores), msg.decided_at),
        )

    def placement_failed(self, msg: PlacementFailed, tracking: Tracking | None) -> bool:
        """No node can take the deployment: ERRORED with the scheduler's reason."""
        return self._on_deployment(
            msg.deployment_id,
            tracking,
            lambda d: (
                d.attempt == msg.attempt
                and d.status is S.INITIALIZED
                and d.fail(f"no node can run it: {msg.reason}", msg.decided_at)
            ),
        )

    def stage_reported(self, msg: StageReported, tracking: Tracking | None) -> bool:
        """A node reached a stage."""
        return self._on_deployment(
            msg.deployment_id,
            tracking,
            lambda d: d.progress(
                msg.node_id, msg.attempt, msg.stage, msg.commit, msg.message, msg.at
            ),
        )

    def work_failed(self, msg: WorkFailed, tracking: Tracking | None) -> bool:
        """The node gave up: ERRORED with its reason."""
        return self._on_deployment(
            msg.deployment_id,
            tracking,
            lambda d: d.fail(
                msg.reason, msg.at, node_id=msg.node_id, attempt=msg.attempt, commit=msg.commit
            ),
        )

    def work_succeeded(self, msg: WorkSucceeded, tracking: Tracking | None) -> bool:
        """The node serves it: RUNNING; it becomes the app's current deployment and the
        previous one is superseded (its node stops it, via the outbox)."""
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            deployment = self._deployment(msg.deployment_id)
            if deployment is None or not deployment.succeed(
                msg.node_id,
                msg.attempt,
                msg.commit,
                msg.url,
                msg.image,
                msg.container_id,
                list(msg.warnings),
                msg.at,
            ):
                return []
            touched.append(deployment)
            changed: list[Any] = []
            app = self._get(app_id(deployment.app or ""))
            if isinstance(app, App):
                previous = app.activate(deployment.id, msg.at)
                old = self._deployment(previous) if previous is not None else None
                if old is not None and old.supersede(deployment.id, msg.at):
                    changed.append(old)
                changed.append(app)
            # Recorded in this order: the previous one's SUPERSEDED, then the new RUNNING.
            # Readers apply the announcements one at a time (the api's read model does), so
            # between the two they see no RUNNING deployment rather than two.
            return [*changed, deployment]

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        return recorded

    def node_lost(self, msg: NodeLost, tracking: Tracking | None) -> list[uuid.UUID]:
        """A node stopped heartbeating: reschedule what it was running or building."""
        candidates = set(msg.deployments) | set(self.in_progress) | self.running_on(msg.node_id)
        moved = []
        for deployment_id in sorted(candidates):
            if self._on_deployment(
                deployment_id, None, lambda d: d.reschedule(msg.node_id, msg.at)
            ):
                moved.append(deployment_id)
        return moved

    def work_lost(self, msg: WorkLost, tracking: Tracking | None) -> bool:
        """A node can no longer run a RUNNING deployment: place it again (next attempt)."""
        return self._on_deployment(
            msg.deployment_id,
            tracking,
            lambda d: d.displace(msg.node_id, msg.attempt, msg.reason, msg.at),
        )

    def node_registered(self, msg: NodeRegistered, tracking: Tracking | None) -> bool:
        """A node started: send it what it should run (it keeps nothing across a restart)."""
        return self.assign(msg.node_id, f"node {msg.hostname} registered", tracking)

    def node_returned(self, msg: NodeReturned, tracking: Tracking | None) -> bool:
        """A lost node is heard from again: send it what it still owns, so that it removes
        the containers of the work that was placed elsewhere while it was away."""
        reason = f"node {msg.hostname} came back after it was declared lost"
        return self.assign(msg.node_id, reason, tracking)

    def assign(self, node_id: uuid.UUID, reason: str, tracking: Tracking | None = None) -> bool:
        """Record the node's assignment (the relay routes it to the node's work queue)."""

        def decide() -> list[Any]:
            candidates = self.running_on(node_id) | self.in_progress
            placed = [d for d in map(self._deployment, sorted(candidates)) if d is not None]
            workload = self._get(workload_id(node_id))
            if not isinstance(workload, Workload):
                workload = Workload(node_id=node_id)
            workload.assign(assignment(node_id, placed), reason, self.clock())
            return [workload]

        return process_once(self.app, tracking, decide)

    def running_on(self, node_id: uuid.UUID) -> set[uuid.UUID]:
        """RUNNING deployments on ``node_id`` (the current deployment of each app)."""
        found = set()
        for index in self._all_of("RepoIndex.Created"):
            for name in index.apps:
                app = self._get(app_id(name))
                if isinstance(app, App) and app.current is not None:
                    current = self._deployment(app.current)
                    if current is not None and current.node_id == node_id:
                        found.add(current.id)
        return found

    def _all_of(self, topic_suffix: str) -> list[Any]:
        out = []
        for n in self.app.all_notifications():
            if n.topic.endswith(f":{topic_suffix}"):
                found = self._get(uuid.UUID(str(n.originator_id)))
                if found is not None:
                    out.append(found)
        return out

    def _on_deployment(
        self,
        deployment_id: uuid.UUID,
        tracking: Tracking | None,
        change: Callable[[Deployment], bool],
    ) -> bool:
        touched: list[Deployment] = []

        def decide() -> list[Any]:
            touched.clear()
            deployment = self._deployment(deployment_id)
            if deployment is None or not change(deployment):
                return []
            touched.append(deployment)
            return [deployment]

        recorded = process_once(self.app, tracking, decide)
        for d in touched:
            self._track(d)
        # Whether this call changed the deployment (not: only marked the message handled).
        return recorded and bool(touched)

    # --- nothing stuck --------------------------------------------------------------------

    def sweep(self) -> list[uuid.UUID]:
        """End ERRORED every deployment that sat in one status past that stage's timeout."""
        now = self.clock()
        expired = []
        for deployment_id in sorted(self.in_progress):
            deployment = self._peek(deployment_id)
            if deployment is None or not deployment.in_progress:
                self.in_progress.discard(deployment_id)
                continue
            limit = self.timeouts[deployment.status]
            if now - deployment.status_since <= timedelta(seconds=limit):
                continue
            reason = (
                f"timed out: no progress in {deployment.status} for {limit:g} s "
                f"(SHIPWRECK_TIMEOUT_{deployment.status}_SECONDS)"
            )
            expire = _expirer(deployment.status, deployment.status_since, reason, now)
            if self._on_deployment(deployment_id, None, expire):  # else it moved on meanwhile
                expired.append(deployment_id)
        return expired

    def recover_in_progress(self) -> int:
        """Find the deployments still in progress by reading the store (at start-up)."""
        statuses: dict[uuid.UUID, str] = {}
        for n in self.app.all_notifications():
            name = n.topic.rsplit(".", 1)[-1]
            if ":Deployment." in n.topic or n.topic.endswith(":Deployment"):
                statuses[uuid.UUID(str(n.originator_id))] = name
        ongoing = {"Requested", "Initialized", "PlacementRequested", "Scheduled", "Progressed"}
        self.in_progress = {i for i, last in statuses.items() if last in ongoing}
        return len(self.in_progress)


def _expirer(
    status: DeploymentStatus, since: datetime, reason: str, at: datetime
) -> Callable[[Deployment], bool]:
    """Fail a deployment that timed out, unless it moved on since the sweep looked at it
    (a report recorded in between starts its next stage's clock)."""
    return lambda d: d.status is status and d.status_since == since and d.fail(reason, at)


__all__ = ["IN_PROGRESS", "Orchestrator", "OrchestratorService"]
