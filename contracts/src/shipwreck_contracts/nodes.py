"""Node work, node reports and node lifecycle.

Work goes from the orchestrator to one node's work queue; the node reports each stage back.
Every work item and report carries the placement ``attempt``: when a node is declared lost
its work is rescheduled with a higher attempt, and late reports from the old attempt are
recognisable as stale.

When a node starts, or is heard from again after it was declared lost, the orchestrator
sends it a `NodeAssignment`: everything it should run. The node reconciles what Docker runs
with it (starts what is missing, removes what it no longer owns).
"""

from __future__ import annotations

import uuid
from typing import Annotated, TypeAlias

import msgspec

from .base import Message
from .enums import DeploymentStatus, Stage
from .placement import Requirements
from .values import (
    Actor,
    AppName,
    Attempt,
    AwareDatetime,
    BranchName,
    CommitSha,
    Megabytes,
    RepoUrl,
)

Hostname = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]

# --- work (orchestrator -> node work queue) -------------------------------------------------


class DeployWork(Message, tag="node.deploy.v1", frozen=True, kw_only=True):
    """Clone, build, test and start a deployment on ``node_id``, then take over the route.

    ``commit`` pins the commit; without it the node deploys the head of ``branch`` and
    reports the commit it resolved. Running the same work twice has one effect: containers
    are found again by their deployment id label.
    """

    deployment_id: uuid.UUID
    app: AppName
    repo_url: RepoUrl
    branch: BranchName
    commit: CommitSha | None = None
    node_id: uuid.UUID
    attempt: Attempt = 1
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    image: str | None = None
    """An image built before for this commit (rollbacks): run it without rebuilding when
    the node still has it, else build ``commit`` again."""
    requested_at: AwareDatetime


class CancelWork(Message, tag="node.cancel.v1", frozen=True, kw_only=True):
    """Abandon a deployment's work in progress and remove what it created."""

    deployment_id: uuid.UUID
    node_id: uuid.UUID
    attempt: Attempt = 1
    reason: str = ""
    requested_at: AwareDatetime


class StopWork(Message, tag="node.stop.v1", frozen=True, kw_only=True):
    """Stop and remove the container of a deployment (superseded, or its app stopped).

    The node removes the app's route only if it still points at this deployment, so stopping
    a superseded deployment never takes down its successor.
    """

    deployment_id: uuid.UUID
    app: AppName
    node_id: uuid.UUID
    reason: str = ""
    requested_at: AwareDatetime


class AssignedDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """One deployment a node should run, as the orchestrator knows it now.

    ``status`` is RUNNING (its container should run, from ``image``), or the stage its work
    on the node was last reported at (SCHEDULED to STARTING): work the node should have in
    hand, and does again from these fields if it lost it (a restart).
    """

    deployment_id: uuid.UUID
    app: AppName
    attempt: Attempt = 1
    status: DeploymentStatus
    repo_url: RepoUrl
    branch: BranchName
    commit: CommitSha | None = None
    image: str | None = None
    requested_at: AwareDatetime


class NodeAssignment(Message, tag="node.assignment.v1", frozen=True, kw_only=True):
    """Everything ``node_id`` should run now; it removes the rest.

    Sent when the node registers (it started) and when it is heard from again after it was
    declared lost (its work went elsewhere meanwhile). The node starts what is missing,
    removes the containers of deployments that are not listed (or not listed for it), and
    drops work in progress of attempts that are not the listed one. ``reason`` says why it
    was sent, for the node's log.
    """

    node_id: uuid.UUID
    deployments: list[AssignedDeployment] = []
    reason: str = ""
    at: AwareDatetime


# --- reports (node -> orchestrator) ---------------------------------------------------------


class StageReported(Message, tag="node.stage-reported.v1", frozen=True, kw_only=True):
    """The node started a stage of a deployment.

    ``commit`` is set once the node has resolved it (from CLONING on).
    """

    deployment_id: uuid.UUID
    node_id: uuid.UUID
    attempt: Attempt = 1
    stage: Stage
    commit: CommitSha | None = None
    message: str = ""
    at: AwareDatetime


class WorkSucceeded(Message, tag="node.work-succeeded.v1", frozen=True, kw_only=True):
    """The deployment is up, healthy and serving the app's route at ``url``.

    ``warnings`` are non-fatal findings, such as unknown keys in the Shipwreck.toml.
    """

    deployment_id: uuid.UUID
    node_id: uuid.UUID
    attempt: Attempt = 1
    commit: CommitSha
    image: str
    container_id: str
    url: str
    warnings: list[str] = []
    at: AwareDatetime


class WorkFailed(Message, tag="node.work-failed.v1", frozen=True, kw_only=True):
    """The deployment failed at ``stage``; ``reason`` is for people and holds no secrets."""

    deployment_id: uuid.UUID
    node_id: uuid.UUID
    attempt: Attempt = 1
    stage: Stage
    reason: str
    commit: CommitSha | None = None
    at: AwareDatetime


class WorkLost(Message, tag="node.work-lost.v1", frozen=True, kw_only=True):
    """A RUNNING deployment can no longer run on the node: its container was gone and could
    not be started again (the image is gone too, or the app no longer starts).

    The orchestrator places it again (a new attempt). ``reason`` is for people.
    """

    deployment_id: uuid.UUID
    node_id: uuid.UUID
    attempt: Attempt = 1
    reason: str
    at: AwareDatetime


# --- lifecycle ------------------------------------------------------------------------------


class NodeRegistered(Message, tag="node.registered.v1", frozen=True, kw_only=True):
    """A node process started and offers its capacity."""

    node_id: uuid.UUID
    hostname: Hostname
    cpu_count: Annotated[int, msgspec.Meta(ge=1)]
    mem_total_mb: Megabytes
    labels: dict[str, str] = {}
    started_at: AwareDatetime


class NodeHeartbeat(Message, tag="node.heartbeat.v1", frozen=True, kw_only=True):
    """A node is alive; its current load and the deployments it runs.

    It repeats the static facts of ``NodeRegistered`` so that a scheduler that missed the
    registration (or was rebuilt) still knows the node after one heartbeat.
    """

    node_id: uuid.UUID
    hostname: Hostname
    cpu_count: Annotated[int, msgspec.Meta(ge=1)]
    mem_total_mb: Megabytes
    mem_free_mb: Megabytes
    load_avg: Annotated[float, msgspec.Meta(ge=0)]
    running: list[uuid.UUID] = []
    at: AwareDatetime


class DrainNode(Message, tag="node.drain.v1", frozen=True, kw_only=True):
    """Place no new work on a node (for maintenance); what runs there keeps running."""

    node_id: uuid.UUID
    actor: Actor
    reason: str = ""
    requested_at: AwareDatetime


class NodeDrained(Message, tag="node.drained.v1", frozen=True, kw_only=True):
    """The scheduler will place no new work on the node."""

    node_id: uuid.UUID
    actor: Actor
    reason: str = ""
    at: AwareDatetime


class NodeLost(Message, tag="node.lost.v1", frozen=True, kw_only=True):
    """A node stopped heartbeating; ``deployments`` it ran must be rescheduled."""

    node_id: uuid.UUID
    last_seen_at: AwareDatetime
    deployments: list[uuid.UUID] = []
    at: AwareDatetime


class NodeReturned(Message, tag="node.returned.v1", frozen=True, kw_only=True):
    """A node declared lost is heard from again (it was cut off, not restarted).

    Its work was placed elsewhere meanwhile, but its containers may still run: it gets its
    assignment again, and removes what it no longer owns.
    """

    node_id: uuid.UUID
    hostname: Hostname
    silent_since: AwareDatetime
    """Its last heartbeat before it went silent."""
    at: AwareDatetime


class SchedulerProbe(Message, tag="scheduler.probe.v1", frozen=True, kw_only=True):
    """The scheduler's message to itself, through the broker, every liveness round.

    While its probes come back its link to RabbitMQ works, so a node it does not hear is
    really silent; when they stop (the broker restarting) it declares no node lost.
    """

    sent_at: AwareDatetime


NodeWork: TypeAlias = DeployWork | CancelWork | StopWork | NodeAssignment
"""Everything that arrives on a node's work queue (decode target for the node)."""

NodeReport: TypeAlias = StageReported | WorkSucceeded | WorkFailed | WorkLost
"""Everything a node reports about its work (decode target for the orchestrator)."""
