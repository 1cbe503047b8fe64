"""What each node should run: the answer to a node that starts, or returns after a loss.

A node keeps no state of its own. When it registers (it started) or is heard from again after
the scheduler declared it lost (it was cut off, and its work was placed elsewhere), the
orchestrator records the node's assignment, and the outbox relay routes it to the node's
work queue as a `NodeAssignment`. Recorded rather than published on the spot, so that it
reaches the node in log order with the work sent before and after it: an assignment never
overtakes the StopWork of a deployment it no longer lists, nor a DeployWork it lists.

`assignment` is the decision, a pure function of the deployments' current state; the
node reconciles its containers with what it lists (``shipwreck_node.reconcile``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Protocol

from eventsourcing.domain import Aggregate, event

from shipwreck_contracts import AssignedDeployment, DeploymentStatus

S = DeploymentStatus

ASSIGNED_STATUSES: Final = frozenset(
    {S.SCHEDULED, S.CLONING, S.BUILDING, S.TESTING, S.STARTING, S.RUNNING}
)
"""A deployment in one of these statuses belongs to the node it was placed on."""

WORKLOAD_NAMESPACE: Final = uuid.UUID("0b5d8a1e-6f43-4a52-9c1d-2e7f3b8c9a41")


class PlacedDeployment(Protocol):
    """What the decision reads of a deployment (the `Deployment` aggregate has it)."""

    @property
    def id(self) -> uuid.UUID: ...

    app: str | None
    node_id: uuid.UUID | None
    attempt: int
    status: DeploymentStatus
    repo_url: str
    branch: str
    commit: str | None
    image: str | None
    requested_at: datetime


def assignment(
    node_id: uuid.UUID, deployments: Iterable[PlacedDeployment]
) -> list[AssignedDeployment]:
    """What ``node_id`` should run: every deployment placed on it that is RUNNING or on its
    way there (SCHEDULED to STARTING), at its current attempt, in id order.

    A deployment that was placed again elsewhere (its node was lost, or could no longer run
    it) is not listed for the old node, whatever that node still runs of it: this is the
    fence a returning node goes by.
    """
    return [
        AssignedDeployment(
            deployment_id=d.id,
            app=d.app,
            attempt=d.attempt,
            status=d.status,
            repo_url=d.repo_url,
            branch=d.branch,
            commit=d.commit,
            image=d.image,
            requested_at=d.requested_at,
        )
        for d in sorted(deployments, key=lambda d: d.id)
        if d.node_id == node_id and d.status in ASSIGNED_STATUSES and d.app is not None
    ]


class Workload(Aggregate):
    """The assignments the orchestrator sent one node: when, why, and what they listed."""

    @staticmethod
    def create_id(node_id: uuid.UUID, **_: Any) -> uuid.UUID:
        return workload_id(node_id)

    @event("Created")
    def __init__(self, node_id: uuid.UUID) -> None:
        self.node_id = node_id
        self.deployments: list[AssignedDeployment] = []

    def assign(self, deployments: list[AssignedDeployment], reason: str, at: datetime) -> None:
        """Record an assignment for the node (always: each one answers the node's appearance,
        and the node acts on it even if it lists what the last one did)."""
        self._assigned(node_id=self.node_id, deployments=deployments, reason=reason, at=at)

    @event("Assigned")
    def _assigned(
        self,
        node_id: uuid.UUID,
        deployments: list[AssignedDeployment],
        reason: str,
        at: datetime,
    ) -> None:
        self.deployments = deployments


def workload_id(node_id: uuid.UUID) -> uuid.UUID:
    """The Workload aggregate id of a node."""
    return uuid.uuid5(WORKLOAD_NAMESPACE, f"workload/{node_id}")
