"""What a node does with its assignment: a pure decision over what it should run and what runs.

The node keeps no state across a restart, and a node cut off from the others (declared
lost, its work placed elsewhere) keeps running what it had. Either way, when it is heard
from again the orchestrator sends it a `NodeAssignment`, and `reconcile(assigned, actual)`
says how to bring Docker in line with it, in the manner of a Kubernetes controller:

- a RUNNING deployment whose app container runs (and passed its health check) is kept: its
  route is checked and its output followed again;
- a RUNNING deployment without one (removed by hand, or dead) is revived from its image;
- a deployment in progress here whose work this process does not have in hand (the node
  restarted mid-build) is deployed again;
- work in hand for an older attempt than the assigned one is replaced by the assigned one;
- work in hand for a deployment not assigned here any more is abandoned;
- every other container labelled for this node is a stray, and is removed.

The runner (``work.WorkRunner``) carries the actions out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from shipwreck_contracts import AssignedDeployment, DeploymentStatus, DeployWork
from shipwreck_node.ports import LABEL_ROLE, ROLE_APP, ContainerInfo

_OLDEST: Final = datetime.min.replace(tzinfo=UTC)

# --- what the node sees ----------------------------------------------------------------------


@dataclass(frozen=True)
class Actual:
    """What runs on this node right now.

    ``containers`` are all the containers labelled for this node, in any state;
    ``in_flight`` maps each deployment whose work (deploy or revive) is under way in this
    process to that work's attempt; ``finished`` are the (deployment, attempt) whose work
    this process ran to its end (its report is on the way: it must not be run again).
    """

    containers: Sequence[ContainerInfo] = ()
    in_flight: Mapping[uuid.UUID, int] = field(default_factory=dict)
    finished: Collection[tuple[uuid.UUID, int]] = frozenset()


# --- what it does about it -------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:
    """The deployment's container serves: make sure it has its route, follow its output."""

    assigned: AssignedDeployment
    container: ContainerInfo


@dataclass(frozen=True)
class Revive:
    """A RUNNING deployment has no container serving here: start one from its image."""

    assigned: AssignedDeployment


@dataclass(frozen=True)
class Resume:
    """A deployment in progress here has no work in hand: deploy it again."""

    assigned: AssignedDeployment


@dataclass(frozen=True)
class Abandon:
    """Work in hand for a deployment no longer assigned here: stop it, remove what it made."""

    deployment_id: uuid.UUID
    attempt: int


@dataclass(frozen=True)
class Remove:
    """A container of this node that nothing assigned accounts for (a stray)."""

    container: ContainerInfo


Action = Keep | Revive | Resume | Abandon | Remove


def reconcile(assigned: Sequence[AssignedDeployment], actual: Actual) -> list[Action]:
    """The actions that bring ``actual`` in line with ``assigned``.

    Abandons and removals come first, so that a stray holding an app's route gives it up
    before a revived container of that app looks for it; then one action per assigned
    deployment, in the assignment's order.
    """
    wanted = {a.deployment_id: a for a in assigned}
    first: list[Action] = [
        Abandon(deployment_id, attempt)
        for deployment_id, attempt in sorted(actual.in_flight.items())
        if deployment_id not in wanted
    ]
    by_deployment: dict[uuid.UUID, list[ContainerInfo]] = {}
    for container in actual.containers:
        deployment_id = container.deployment_id
        if deployment_id is None or deployment_id not in wanted:
            if deployment_id is None or deployment_id not in actual.in_flight:
                first.append(Remove(container))  # an abandoned one goes with its work
            continue
        by_deployment.setdefault(deployment_id, []).append(container)

    then: list[Action] = []
    for a in assigned:
        attempt = actual.in_flight.get(a.deployment_id)
        if attempt is not None and attempt >= a.attempt:
            continue  # its work is in hand (a redelivery, or a revival under way)
        containers = by_deployment.get(a.deployment_id, [])
        if a.status is not DeploymentStatus.RUNNING:
            if attempt is not None or (a.deployment_id, a.attempt) not in actual.finished:
                then.append(Resume(a))
            continue
        serving = _serving(containers) if attempt is None else None
        if serving is None:
            then.append(Revive(a))  # it removes the dead containers it replaces
            continue
        then.append(Keep(a, serving))
        first.extend(Remove(c) for c in containers if c.id != serving.id)
    return first + then


def deploy_work(assigned: AssignedDeployment, node_id: uuid.UUID) -> DeployWork:
    """The `DeployWork` that runs ``assigned`` on ``node_id`` (its image, if it has one)."""
    return DeployWork(
        deployment_id=assigned.deployment_id,
        app=assigned.app,
        repo_url=assigned.repo_url,
        branch=assigned.branch,
        commit=assigned.commit,
        node_id=node_id,
        attempt=assigned.attempt,
        image=assigned.image,
        requested_at=assigned.requested_at,
    )


def _serving(containers: Sequence[ContainerInfo]) -> ContainerInfo | None:
    """The newest app container that runs and passed its health check, if any."""
    healthy = [
        c
        for c in containers
        if c.running and c.kept_running and c.labels.get(LABEL_ROLE) == ROLE_APP
    ]
    return max(healthy, key=lambda c: (c.created or _OLDEST, c.id), default=None)
