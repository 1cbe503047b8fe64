"""Deployment commands (api -> orchestrator) and deployment integration events.

The orchestrator is the only writer of deployments. It accepts commands, records domain
events, and its outbox relay publishes the integration events below. Every event names the
deployment, the app (``None`` while it is not known yet) and when it happened; together they
let any read model rebuild a deployment's status and history.
"""

from __future__ import annotations

import uuid
from typing import TypeAlias, assert_never

from .base import Message
from .enums import DeploymentStatus, Stage, Trigger
from .placement import NodeScore
from .values import (
    Actor,
    AppName,
    Attempt,
    AwareDatetime,
    BranchName,
    CommitSha,
    RepoUrl,
)

# --- commands -------------------------------------------------------------------------------


class RequestDeployment(Message, tag="deployment.request.v1", frozen=True, kw_only=True):
    """Deploy a repository branch (a new app, or a redeploy of a known one).

    The api chooses ``deployment_id`` so it can answer the client at once; the orchestrator
    treats a second request with the same id as a duplicate. ``app`` is set for a redeploy
    of a known app; ``commit`` pins the deployment to one commit (rollbacks, webhooks)
    instead of the branch head.
    """

    deployment_id: uuid.UUID
    repo_url: RepoUrl
    branch: BranchName = "main"
    watch: bool = True
    trigger: Trigger = Trigger.MANUAL
    actor: Actor
    app: AppName | None = None
    commit: CommitSha | None = None
    requested_at: AwareDatetime


class CancelDeployment(Message, tag="deployment.cancel.v1", frozen=True, kw_only=True):
    """Cancel a deployment that has not reached a terminal status."""

    deployment_id: uuid.UUID
    actor: Actor
    reason: str = ""
    requested_at: AwareDatetime


# --- events ---------------------------------------------------------------------------------


class DeploymentRequested(Message, tag="deployment.requested.v1", frozen=True, kw_only=True):
    """A deployment was requested and recorded (status REQUESTED)."""

    deployment_id: uuid.UUID
    app: AppName | None = None
    repo_url: RepoUrl
    branch: BranchName
    watch: bool
    trigger: Trigger
    actor: Actor
    commit: CommitSha | None = None
    at: AwareDatetime


class DeploymentInitialized(Message, tag="deployment.initialized.v1", frozen=True, kw_only=True):
    """The orchestrator accepted the request and bound it to an app (status INITIALIZED).

    For a rollback, ``rolled_back_from`` is the commit the app ran when it was rolled back
    (the watcher does not deploy it to the app again until the branch moves on).
    """

    deployment_id: uuid.UUID
    app: AppName
    repo_url: RepoUrl
    branch: BranchName
    trigger: Trigger
    commit: CommitSha | None = None
    at: AwareDatetime
    rolled_back_from: CommitSha | None = None


class DeploymentScheduled(Message, tag="deployment.scheduled.v1", frozen=True, kw_only=True):
    """A node was chosen for the deployment (status SCHEDULED).

    ``scores`` are the scheduler's scores for every node it considered, so a user can see why
    this node won. A rescheduled deployment is scheduled again with a higher ``attempt``.
    """

    deployment_id: uuid.UUID
    app: AppName
    node_id: uuid.UUID
    attempt: Attempt = 1
    scores: list[NodeScore] = []
    at: AwareDatetime


class DeploymentProgressed(Message, tag="deployment.progressed.v1", frozen=True, kw_only=True):
    """The node reached a new stage: CLONING, BUILDING, TESTING or STARTING.

    One class for the four node stages, rather than one per stage: they carry the same data,
    and consumers handle them the same way (the status is ``stage.status``).
    """

    deployment_id: uuid.UUID
    app: AppName
    stage: Stage
    node_id: uuid.UUID
    commit: CommitSha | None = None
    message: str = ""
    at: AwareDatetime


class DeploymentRunning(Message, tag="deployment.running.v1", frozen=True, kw_only=True):
    """The deployment passed its health check and serves the app's route (status RUNNING).

    ``warnings`` are the non-fatal findings of the build, such as unknown keys in the
    Shipwreck.toml.
    """

    deployment_id: uuid.UUID
    app: AppName
    node_id: uuid.UUID
    commit: CommitSha
    url: str
    image: str = ""
    container_id: str = ""
    warnings: list[str] = []
    at: AwareDatetime


class DeploymentErrored(Message, tag="deployment.errored.v1", frozen=True, kw_only=True):
    """The deployment failed (status ERRORED); the app keeps its last good deployment.

    ``stage`` is the status the deployment was in when it failed; ``reason`` is meant for
    people and never contains secrets.
    """

    deployment_id: uuid.UUID
    app: AppName | None = None
    stage: DeploymentStatus
    reason: str
    at: AwareDatetime


class DeploymentCancelled(Message, tag="deployment.cancelled.v1", frozen=True, kw_only=True):
    """The deployment was cancelled before it finished (status CANCELLED)."""

    deployment_id: uuid.UUID
    app: AppName | None = None
    stage: DeploymentStatus
    actor: Actor
    reason: str = ""
    at: AwareDatetime


class DeploymentSuperseded(Message, tag="deployment.superseded.v1", frozen=True, kw_only=True):
    """A newer deployment of the app took over its route (status SUPERSEDED)."""

    deployment_id: uuid.UUID
    app: AppName
    by: uuid.UUID
    at: AwareDatetime


class DeploymentStopped(Message, tag="deployment.stopped.v1", frozen=True, kw_only=True):
    """The running deployment was stopped because its app was stopped (status STOPPED)."""

    deployment_id: uuid.UUID
    app: AppName
    actor: Actor
    reason: str = ""
    at: AwareDatetime


class DeploymentCancelRefused(
    Message, tag="deployment.cancel-refused.v1", frozen=True, kw_only=True
):
    """A cancel arrived after the deployment had finished (it won the race): nothing was
    cancelled, and the deployment stays ``status``. ``reason`` says so, for people."""

    deployment_id: uuid.UUID
    app: AppName | None = None
    status: DeploymentStatus
    actor: Actor
    reason: str
    at: AwareDatetime


DeploymentEvent: TypeAlias = (
    DeploymentRequested
    | DeploymentInitialized
    | DeploymentScheduled
    | DeploymentProgressed
    | DeploymentRunning
    | DeploymentErrored
    | DeploymentCancelled
    | DeploymentSuperseded
    | DeploymentStopped
    | DeploymentCancelRefused
)
"""Every event of a deployment's story (decode target for read models); all but a refused
cancel change its status."""


def status_after(event: DeploymentEvent) -> DeploymentStatus:
    """Return the status a deployment is in once ``event`` has happened."""
    match event:
        case DeploymentRequested():
            return DeploymentStatus.REQUESTED
        case DeploymentInitialized():
            return DeploymentStatus.INITIALIZED
        case DeploymentScheduled():
            return DeploymentStatus.SCHEDULED
        case DeploymentProgressed(stage=stage):
            return stage.status
        case DeploymentRunning():
            return DeploymentStatus.RUNNING
        case DeploymentErrored():
            return DeploymentStatus.ERRORED
        case DeploymentCancelled():
            return DeploymentStatus.CANCELLED
        case DeploymentSuperseded():
            return DeploymentStatus.SUPERSEDED
        case DeploymentStopped():
            return DeploymentStatus.STOPPED
        case DeploymentCancelRefused(status=status):
            return status  # unchanged: the deployment had already finished
        case _:
            assert_never(event)
