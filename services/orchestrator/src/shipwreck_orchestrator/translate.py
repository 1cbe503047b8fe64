"""What the orchestrator announces for each of its domain events (the outbox translation).

Each domain event maps to the integration events readers fold, plus, where the event
hands work to a node, the work message routed to that node's queue only, and for a
rollback's start, a copy routed to the watcher only.
"""

from __future__ import annotations

from typing import Any

from shipwreck_contracts import (
    AppWatchChanged,
    CancelWork,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStopped,
    DeploymentSuperseded,
    DeployWork,
    NodeAssignment,
    RequestPlacement,
    StopWork,
    Trigger,
)
from shipwreck_eventstore.relay import Outgoing, Routed
from shipwreck_messaging import node_work_routing_key
from shipwreck_messaging.routes import ROLLBACK_INITIALIZED


def translate(e: Any) -> list[Outgoing]:
    """The messages that announce domain event ``e`` (empty for private events)."""
    d = e.originator_id
    # Event classes are made by @event at class creation; their qualified names are stable
    # (they are the stored topics), so match on those.
    match type(e).__qualname__:
        case "Deployment.Requested":
            return [
                DeploymentRequested(
                    deployment_id=d,
                    app=e.app,
                    repo_url=e.repo_url,
                    branch=e.branch,
                    watch=e.watch,
                    trigger=e.trigger,
                    actor=e.actor,
                    commit=e.commit,
                    at=e.requested_at,
                )
            ]
        case "Deployment.Initialized":
            return _initialized(e, getattr(e, "rolled_back_from", None))
        case "Deployment.PlacementRequested":
            return [
                RequestPlacement(
                    deployment_id=d,
                    app=e.app,
                    attempt=e.attempt,
                    requested_at=e.at,
                )
            ]
        case "Deployment.Rescheduled":
            return [
                *_initialized(e),
                RequestPlacement(
                    deployment_id=d,
                    app=e.app,
                    attempt=e.attempt,
                    avoid_node_ids=[e.lost_node],
                    requested_at=e.at,
                ),
            ]
        case "Deployment.Displaced":
            # Placed again like a lost node's work, but without avoiding its node: no
            # other node has the image either, so whichever gets it builds it again.
            return [
                *_initialized(e),
                RequestPlacement(deployment_id=d, app=e.app, attempt=e.attempt, requested_at=e.at),
            ]
        case "Workload.Assigned":
            assigned = NodeAssignment(
                node_id=e.node_id, deployments=e.deployments, reason=e.reason, at=e.at
            )
            return [Routed(assigned, node_work_routing_key(str(e.node_id)))]
        case "Deployment.Scheduled":
            work = DeployWork(
                deployment_id=d,
                app=e.app,
                repo_url=e.repo_url,
                branch=e.branch,
                commit=e.commit,
                node_id=e.node_id,
                attempt=e.attempt,
                requested_at=e.requested_at,
                image=getattr(e, "image", None),
            )
            return [
                DeploymentScheduled(
                    deployment_id=d,
                    app=e.app,
                    node_id=e.node_id,
                    attempt=e.attempt,
                    scores=e.scores,
                    at=e.at,
                ),
                Routed(work, node_work_routing_key(str(e.node_id))),
            ]
        case "Deployment.Progressed":
            return [
                DeploymentProgressed(
                    deployment_id=d,
                    app=e.app,
                    stage=e.stage,
                    node_id=e.node_id,
                    commit=e.commit,
                    message=e.message,
                    at=e.at,
                )
            ]
        case "Deployment.Running":
            return [
                DeploymentRunning(
                    deployment_id=d,
                    app=e.app,
                    node_id=e.node_id,
                    commit=e.commit,
                    url=e.url,
                    image=e.image,
                    container_id=e.container_id,
                    warnings=e.warnings,
                    at=e.at,
                )
            ]
        case "Deployment.Errored":
            out: list[Outgoing] = [
                DeploymentErrored(
                    deployment_id=d,
                    app=e.app,
                    stage=e.stage,
                    reason=e.reason,
                    at=e.at,
                )
            ]
            return out + _cancel_work(e, e.reason)
        case "Deployment.Cancelled":
            out = [
                DeploymentCancelled(
                    deployment_id=d,
                    app=e.app,
                    stage=e.stage,
                    actor=e.actor,
                    reason=e.reason,
                    at=e.at,
                )
            ]
            return out + _cancel_work(e, e.reason or f"cancelled by {e.actor}")
        case "Deployment.CancelRefused":
            return [
                DeploymentCancelRefused(
                    deployment_id=d,
                    app=e.app,
                    status=e.status,
                    actor=e.actor,
                    reason=e.reason,
                    at=e.at,
                )
            ]
        case "Deployment.Superseded":
            return [
                DeploymentSuperseded(deployment_id=d, app=e.app, by=e.by, at=e.at),
                *_stop_work(e, f"superseded by {e.by}"),
            ]
        case "Deployment.Stopped":
            return [
                DeploymentStopped(
                    deployment_id=d, app=e.app, actor=e.actor, reason=e.reason, at=e.at
                ),
                *_stop_work(e, e.reason or f"stopped by {e.actor}"),
            ]
        case "App.Created":
            return [
                AppWatchChanged(
                    app=e.name, repo_url=e.repo_url, branch=e.branch, watching=e.watching, at=e.at
                )
            ]
        case "App.WatchChanged":
            return [
                AppWatchChanged(
                    app=e.app, repo_url=e.repo_url, branch=e.branch, watching=e.watching, at=e.at
                )
            ]
    return []


def _initialized(e: Any, rolled_back_from: str | None = None) -> list[Outgoing]:
    """``DeploymentInitialized`` for an event that (re)starts a deployment: accepted,
    rescheduled after its node was lost, or displaced."""
    message = DeploymentInitialized(
        deployment_id=e.originator_id,
        app=e.app,
        repo_url=e.repo_url,
        branch=e.branch,
        trigger=e.trigger,
        commit=e.commit,
        at=e.at,
        rolled_back_from=rolled_back_from,
    )
    # A rollback's goes to the watcher too, as a copy under a key of its own: the watcher
    # pins the app, and has no use for any other deployment's.
    if message.trigger is Trigger.ROLLBACK:
        return [message, Routed(message, ROLLBACK_INITIALIZED)]
    return [message]


def _cancel_work(e: Any, reason: str) -> list[Outgoing]:
    # Work may be under way on a node (a timeout, a cancel): tell that node to drop it.
    if e.node_id is None:
        return []
    work = CancelWork(
        deployment_id=e.originator_id,
        node_id=e.node_id,
        attempt=max(e.attempt, 1),
        reason=reason,
        requested_at=e.at,
    )
    return [Routed(work, node_work_routing_key(str(e.node_id)))]


def _stop_work(e: Any, reason: str) -> list[Outgoing]:
    if e.node_id is None:
        return []
    work = StopWork(
        deployment_id=e.originator_id,
        app=e.app,
        node_id=e.node_id,
        reason=reason,
        requested_at=e.at,
    )
    return [Routed(work, node_work_routing_key(str(e.node_id)))]
