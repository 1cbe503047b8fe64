"""What the orchestrator tells a node that starts or returns: its assignment, and fencing.

The decision (`assignment`) is pure; the service records it on a real (SQLite) store and the
outbox translation routes it to the node's own queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipwreck_contracts import (
    DeploymentInitialized,
    DeploymentStatus,
    NodeAssignment,
    NodeLost,
    NodeRegistered,
    NodeReturned,
    PlacementDecided,
    RequestDeployment,
    RequestPlacement,
    Stage,
    StageReported,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
)
from shipwreck_eventstore import StoreConfig
from shipwreck_eventstore.relay import Routed
from shipwreck_messaging import node_work_routing_key
from shipwreck_orchestrator.domain import Deployment
from shipwreck_orchestrator.service import Orchestrator, OrchestratorService
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_orchestrator.translate import translate
from shipwreck_orchestrator.workload import assignment, workload_id

S = DeploymentStatus
NODE_A, NODE_B = uuid.uuid4(), uuid.uuid4()
SHA = "b" * 40
AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


# --- the pure decision -----------------------------------------------------------------------


@dataclass
class Placed:
    """A deployment as the decision reads it."""

    id: uuid.UUID
    status: S
    node_id: uuid.UUID | None = NODE_A
    attempt: int = 1
    app: str | None = "shop"
    repo_url: str = "https://github.com/acme/shop"
    branch: str = "main"
    commit: str | None = SHA
    image: str | None = "shipwreck/app-shop:1"
    requested_at: datetime = AT


def test_a_node_is_assigned_what_runs_or_is_on_its_way_there_at_the_current_attempt() -> None:
    ids = sorted(uuid.uuid4() for _ in range(7))
    deployments = [
        Placed(ids[0], S.RUNNING, attempt=2),
        Placed(ids[1], S.BUILDING),
        Placed(ids[2], S.SCHEDULED),
        Placed(ids[3], S.RUNNING, node_id=NODE_B),  # another node's
        Placed(ids[4], S.INITIALIZED, node_id=None),  # moved away: being placed again
        Placed(ids[5], S.SUPERSEDED),
        Placed(ids[6], S.ERRORED),
    ]
    listed = assignment(NODE_A, reversed(deployments))
    assert [(a.deployment_id, a.status, a.attempt) for a in listed] == [
        (ids[0], S.RUNNING, 2),
        (ids[1], S.BUILDING, 1),
        (ids[2], S.SCHEDULED, 1),
    ]
    assert (listed[0].image, listed[0].commit, listed[0].app) == (
        "shipwreck/app-shop:1",
        SHA,
        "shop",
    )


def test_a_node_with_nothing_placed_on_it_is_assigned_nothing() -> None:
    assert assignment(NODE_B, [Placed(uuid.uuid4(), S.RUNNING)]) == []


# --- through the service ---------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[OrchestratorService]:
    app = Orchestrator(StoreConfig(state_dir=str(tmp_path)))
    yield OrchestratorService(
        app, OrchestratorSettings(), clock=lambda: AT, resolve=lambda host: ["140.82.112.3"]
    )
    app.close()


def _deployment(service: OrchestratorService, deployment_id: uuid.UUID) -> Deployment:
    found = service.app.repository.get(deployment_id)
    assert isinstance(found, Deployment)
    return found


def _running_on(service: OrchestratorService, node: uuid.UUID, attempt: int = 1) -> uuid.UUID:
    """A deployment taken to RUNNING on ``node`` (placed there at ``attempt``)."""
    deployment_id = uuid.uuid4()
    service.request_deployment(
        RequestDeployment(
            deployment_id=deployment_id,
            repo_url=f"https://github.com/acme/app-{deployment_id.hex[:6]}",
            actor="admin",
            requested_at=AT,
        ),
        None,
    )
    _place(service, deployment_id, node, attempt)
    return deployment_id


def _place(
    service: OrchestratorService, deployment_id: uuid.UUID, node: uuid.UUID, attempt: int
) -> None:
    app = _deployment(service, deployment_id).app or ""
    service.placement_decided(
        PlacementDecided(
            deployment_id=deployment_id, app=app, attempt=attempt, node_id=node, decided_at=AT
        ),
        None,
    )
    service.work_succeeded(
        WorkSucceeded(
            deployment_id=deployment_id,
            node_id=node,
            attempt=attempt,
            commit=SHA,
            image=f"shipwreck/app-{app}:{deployment_id}",
            container_id="c1",
            url="http://x/",
            at=AT,
        ),
        None,
    )


def _sent(service: OrchestratorService, node: uuid.UUID) -> NodeAssignment:
    """The last assignment recorded for ``node``, as the relay routes it."""
    last = list(service.app.events.get(workload_id(node)))[-1]
    (routed,) = translate(last)
    assert isinstance(routed, Routed)
    assert routed.routing_key == node_work_routing_key(str(node))
    assert isinstance(routed.message, NodeAssignment)
    return routed.message


def _registered(node: uuid.UUID) -> NodeRegistered:
    return NodeRegistered(node_id=node, hostname="a", cpu_count=2, mem_total_mb=4096, started_at=AT)


def test_a_registering_node_is_sent_what_it_runs(service: OrchestratorService) -> None:
    running = _running_on(service, NODE_A)
    _running_on(service, NODE_B)
    assert service.node_registered(_registered(NODE_A), None)
    sent = _sent(service, NODE_A)
    assert sent.node_id == NODE_A
    assert [(a.deployment_id, a.status, a.attempt) for a in sent.deployments] == [
        (running, S.RUNNING, 1)
    ]
    app = _deployment(service, running).app
    assert sent.deployments[0].image == f"shipwreck/app-{app}:{running}"
    assert "registered" in sent.reason


def test_a_returning_lost_node_is_sent_only_what_stayed_with_it(
    service: OrchestratorService,
) -> None:
    moved = _running_on(service, NODE_A)
    service.node_lost(NodeLost(node_id=NODE_A, last_seen_at=AT, at=AT), None)
    _place(service, moved, NODE_B, attempt=2)
    assert _deployment(service, moved).status is S.RUNNING

    returned = NodeReturned(node_id=NODE_A, hostname="a", silent_since=AT, at=AT)
    assert service.node_returned(returned, None)
    # Nothing is A's any more: it removes the container it still runs.
    assert _sent(service, NODE_A).deployments == []
    service.node_registered(_registered(NODE_B), None)
    assert [(a.deployment_id, a.attempt) for a in _sent(service, NODE_B).deployments] == [
        (moved, 2)
    ]

    # A's late reports of the first attempt change nothing (fencing).
    version = _deployment(service, moved).version
    service.stage_reported(
        StageReported(deployment_id=moved, node_id=NODE_A, stage=Stage.STARTING, at=AT), None
    )
    service.work_failed(
        WorkFailed(deployment_id=moved, node_id=NODE_A, stage=Stage.STARTING, reason="x", at=AT),
        None,
    )
    service.work_lost(
        WorkLost(deployment_id=moved, node_id=NODE_A, reason="its container is gone", at=AT),
        None,
    )
    after = _deployment(service, moved)
    assert (after.version, after.status, after.node_id, after.attempt) == (
        version,
        S.RUNNING,
        NODE_B,
        2,
    )


def test_a_deployment_its_node_can_no_longer_run_is_placed_again(
    service: OrchestratorService,
) -> None:
    lost = _running_on(service, NODE_A)
    report = WorkLost(
        deployment_id=lost,
        node_id=NODE_A,
        attempt=1,
        reason="its container is gone and its image is no longer on this node",
        at=AT,
    )
    assert service.work_lost(report, None)
    d = _deployment(service, lost)
    assert (d.status, d.attempt, d.node_id) == (S.INITIALIZED, 2, None)
    assert lost in service.in_progress  # the sweeper watches it again
    assert "can no longer run it" in d.status_message
    messages = translate(list(service.app.events.get(lost))[-1])
    assert [type(m) for m in messages] == [DeploymentInitialized, RequestPlacement]
    placement = messages[1]
    assert isinstance(placement, RequestPlacement)
    # Not kept off that node: no node has the image any more, any may build it.
    assert (placement.attempt, placement.avoid_node_ids) == (2, [])

    # The same report again changes nothing: it is of an attempt that is over.
    service.work_lost(report, None)
    assert _deployment(service, lost).version == d.version
