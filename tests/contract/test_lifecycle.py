"""The deployment lifecycle vocabulary matches DESIGN.md section 5."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime

import pytest

from shipwreck_contracts import (
    IN_PROGRESS_STATUSES,
    TERMINAL_STATUSES,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentEvent,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentStopped,
    DeploymentSuperseded,
    Stage,
    Trigger,
    status_after,
)

AT = datetime(2025, 1, 2, tzinfo=UTC)
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
NODE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
SHA = "a" * 40


def test_statuses_are_exactly_the_design_ones_in_order() -> None:
    assert [status.value for status in DeploymentStatus] == [
        "REQUESTED",
        "INITIALIZED",
        "SCHEDULED",
        "CLONING",
        "BUILDING",
        "TESTING",
        "STARTING",
        "RUNNING",
        "SUPERSEDED",
        "STOPPED",
        "ERRORED",
        "CANCELLED",
    ]


def test_terminal_statuses_are_the_four_ends() -> None:
    assert {status.value for status in TERMINAL_STATUSES} == {
        "SUPERSEDED",
        "STOPPED",
        "ERRORED",
        "CANCELLED",
    }


def test_running_is_neither_terminal_nor_in_progress() -> None:
    assert DeploymentStatus.RUNNING not in TERMINAL_STATUSES | IN_PROGRESS_STATUSES


def test_every_status_is_terminal_in_progress_or_running() -> None:
    assert TERMINAL_STATUSES | IN_PROGRESS_STATUSES | {DeploymentStatus.RUNNING} == set(
        DeploymentStatus
    )


def test_is_terminal_agrees_with_the_terminal_set() -> None:
    assert {status for status in DeploymentStatus if status.is_terminal} == TERMINAL_STATUSES


@pytest.mark.parametrize("stage", list(Stage))
def test_each_node_stage_is_a_deployment_status(stage: Stage) -> None:
    assert stage.status.value == stage.value


def test_triggers_are_the_design_ones() -> None:
    assert {trigger.value for trigger in Trigger} == {"MANUAL", "WATCH", "WEBHOOK", "ROLLBACK"}


_EVENTS: list[tuple[DeploymentEvent, DeploymentStatus]] = [
    (
        DeploymentRequested(
            deployment_id=ID,
            repo_url="https://x.test/a.git",
            branch="main",
            watch=True,
            trigger=Trigger.MANUAL,
            actor="alice",
            at=AT,
        ),
        DeploymentStatus.REQUESTED,
    ),
    (
        DeploymentInitialized(
            deployment_id=ID,
            app="a",
            repo_url="https://x.test/a.git",
            branch="main",
            trigger=Trigger.MANUAL,
            at=AT,
        ),
        DeploymentStatus.INITIALIZED,
    ),
    (
        DeploymentScheduled(deployment_id=ID, app="a", node_id=NODE, at=AT),
        DeploymentStatus.SCHEDULED,
    ),
    (
        DeploymentProgressed(deployment_id=ID, app="a", stage=Stage.TESTING, node_id=NODE, at=AT),
        DeploymentStatus.TESTING,
    ),
    (
        DeploymentRunning(
            deployment_id=ID, app="a", node_id=NODE, commit=SHA, url="http://a.test", at=AT
        ),
        DeploymentStatus.RUNNING,
    ),
    (
        DeploymentErrored(
            deployment_id=ID, stage=DeploymentStatus.BUILDING, reason="pip failed", at=AT
        ),
        DeploymentStatus.ERRORED,
    ),
    (
        DeploymentCancelled(deployment_id=ID, stage=DeploymentStatus.CLONING, actor="alice", at=AT),
        DeploymentStatus.CANCELLED,
    ),
    (
        DeploymentSuperseded(deployment_id=ID, app="a", by=OTHER_ID, at=AT),
        DeploymentStatus.SUPERSEDED,
    ),
    (
        DeploymentStopped(deployment_id=ID, app="a", actor="alice", at=AT),
        DeploymentStatus.STOPPED,
    ),
    (
        DeploymentCancelRefused(
            deployment_id=ID,
            app="a",
            status=DeploymentStatus.RUNNING,
            actor="alice",
            reason="cancel by alice refused: the deployment was already RUNNING when it arrived",
            at=AT,
        ),
        DeploymentStatus.RUNNING,  # unchanged
    ),
]


@pytest.mark.parametrize(("event", "status"), _EVENTS, ids=lambda v: type(v).__name__)
def test_status_after_an_event(event: DeploymentEvent, status: DeploymentStatus) -> None:
    assert status_after(event) == status


def test_status_after_covers_every_deployment_event() -> None:
    assert {type(event) for event, _ in _EVENTS} == set(typing.get_args(DeploymentEvent))
