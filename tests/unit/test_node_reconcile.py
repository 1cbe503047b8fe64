"""The node's reconcile decision: what it should run (its assignment) against what runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shipwreck_contracts import AssignedDeployment, DeploymentStatus
from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_NODE,
    LABEL_ROLE,
    ROLE_APP,
    ROLE_TEST,
    ContainerInfo,
)
from shipwreck_node.reconcile import (
    Abandon,
    Actual,
    Keep,
    Remove,
    Resume,
    Revive,
    deploy_work,
    reconcile,
)

S = DeploymentStatus
NODE = uuid.uuid4()
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def assigned(
    status: S = S.RUNNING, *, attempt: int = 1, deployment_id: uuid.UUID | None = None
) -> AssignedDeployment:
    return AssignedDeployment(
        deployment_id=deployment_id or uuid.uuid4(),
        app="shop",
        attempt=attempt,
        status=status,
        repo_url="https://git.example.com/acme/shop.git",
        branch="main",
        commit="a" * 40,
        image="shipwreck/app-shop:1",
        requested_at=T0,
    )


def container(
    deployment_id: uuid.UUID | None,
    *,
    role: str = ROLE_APP,
    running: bool = True,
    healthy: bool = True,
    age: int = 0,
) -> ContainerInfo:
    labels = {LABEL_NODE: str(NODE), LABEL_ROLE: role, LABEL_APP: "shop"}
    if deployment_id is not None:
        labels[LABEL_DEPLOYMENT] = str(deployment_id)
    return ContainerInfo(
        id=uuid.uuid4().hex,
        name=f"c-{uuid.uuid4().hex[:6]}",
        labels=labels,
        running=running,
        kept_running=healthy,
        host_port=40000,
        created=T0 - timedelta(seconds=age),
    )


def test_a_running_deployment_whose_container_serves_is_kept() -> None:
    a = assigned()
    c = container(a.deployment_id)
    assert reconcile([a], Actual(containers=[c])) == [Keep(a, c)]


def test_a_running_deployment_without_a_container_is_revived() -> None:
    a = assigned()
    assert reconcile([a], Actual()) == [Revive(a)]


def test_a_dead_or_unhealthy_container_does_not_count_as_serving() -> None:
    a = assigned()
    dead = container(a.deployment_id, running=False)
    never_healthy = container(a.deployment_id, healthy=False)
    # The revival removes them: they carry the name it needs.
    assert reconcile([a], Actual(containers=[dead, never_healthy])) == [Revive(a)]


def test_containers_of_unassigned_deployments_and_unlabelled_ones_are_strays() -> None:
    a = assigned()
    kept = container(a.deployment_id)
    moved_away = container(uuid.uuid4())
    unlabelled = container(None)
    actions = reconcile([a], Actual(containers=[kept, moved_away, unlabelled]))
    assert actions == [Remove(moved_away), Remove(unlabelled), Keep(a, kept)]


def test_nothing_assigned_removes_every_container_of_the_node() -> None:
    containers = [container(uuid.uuid4()), container(uuid.uuid4(), role=ROLE_TEST)]
    assert reconcile([], Actual(containers=containers)) == [Remove(c) for c in containers]


def test_the_newest_serving_container_is_kept_and_other_ones_of_it_go() -> None:
    a = assigned()
    older, newer = container(a.deployment_id, age=60), container(a.deployment_id)
    leftover_test = container(a.deployment_id, role=ROLE_TEST)
    actions = reconcile([a], Actual(containers=[older, newer, leftover_test]))
    assert actions == [Remove(older), Remove(leftover_test), Keep(a, newer)]


def test_work_in_hand_for_the_assigned_attempt_is_left_alone() -> None:
    running, building = assigned(), assigned(S.BUILDING)
    actual = Actual(in_flight={running.deployment_id: 1, building.deployment_id: 1})
    assert reconcile([running, building], actual) == []


def test_work_in_hand_that_is_no_longer_assigned_is_abandoned_with_its_containers() -> None:
    gone = uuid.uuid4()
    actual = Actual(containers=[container(gone)], in_flight={gone: 2})
    # Abandoning removes the containers of its deployment: no separate removal.
    assert reconcile([], actual) == [Abandon(gone, 2)]


def test_work_of_an_older_attempt_is_replaced_by_the_assigned_attempt() -> None:
    building, running = assigned(S.BUILDING, attempt=3), assigned(attempt=2)
    actual = Actual(
        containers=[container(running.deployment_id)],
        in_flight={building.deployment_id: 1, running.deployment_id: 1},
    )
    assert reconcile([building, running], actual) == [Resume(building), Revive(running)]


def test_a_deployment_in_progress_whose_work_was_lost_is_deployed_again() -> None:
    a = assigned(S.STARTING)
    leftover = container(a.deployment_id, healthy=False)
    # The deployment starts by removing what an earlier run of it left.
    assert reconcile([a], Actual(containers=[leftover])) == [Resume(a)]


def test_work_that_ended_here_is_not_run_again_for_an_assignment_that_missed_its_report() -> None:
    a = assigned(S.STARTING)
    assert reconcile([a], Actual(finished={(a.deployment_id, 1)})) == []
    assert reconcile([a], Actual(finished={(a.deployment_id, 0)})) == [Resume(a)]


def test_the_work_for_an_assigned_deployment_carries_its_attempt_and_image() -> None:
    a = assigned(attempt=4)
    work = deploy_work(a, NODE)
    assert (work.deployment_id, work.attempt, work.node_id) == (a.deployment_id, 4, NODE)
    assert (work.image, work.commit, work.app) == (a.image, a.commit, a.app)
