"""Builders of what the orchestrator's relay publishes, shared by the api and CLI tests.

A story is a list of :class:`Relayed` messages: each integration message with the position
the relay gives it in the orchestrator's log. The tests below check that the builders make
messages the real contracts accept.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentSuperseded,
    Message,
    Stage,
    Trigger,
    decode_message,
    encode,
)

ORIGIN = "orchestrator"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NODE = uuid.UUID("00000000-0000-4000-8000-00000000000a")


@dataclass(frozen=True)
class Relayed:
    """An integration message at its position in the orchestrator's log."""

    position: int
    message: Message
    origin: str = ORIGIN


def sha(n: int) -> str:
    """A valid full commit id, distinct per ``n``."""
    return f"{n:040x}"


class Log:
    """Hands out increasing positions and times, like the orchestrator's notification log."""

    def __init__(self, start: int = 1, at: datetime = T0) -> None:
        self.position = start - 1
        self.at = at

    def next(self) -> tuple[int, datetime]:
        """The next position and a time one second later."""
        self.position += 1
        self.at += timedelta(seconds=1)
        return self.position, self.at


def deployment(
    log: Log,
    *,
    app: str,
    repo_url: str = "https://git.example.com/team/hello.git",
    branch: str = "main",
    commit: str = sha(1),
    outcome: DeploymentStatus = DeploymentStatus.RUNNING,
    deployment_id: uuid.UUID | None = None,
    node_id: uuid.UUID = NODE,
    trigger: Trigger = Trigger.MANUAL,
    first: bool = False,
) -> tuple[uuid.UUID, list[Relayed]]:
    """One deployment's messages from REQUESTED to ``outcome`` (RUNNING, ERRORED, CANCELLED).

    ``first`` adds the AppWatchChanged the orchestrator announces when it creates the app.
    """
    d = deployment_id or uuid.uuid4()
    out: list[Relayed] = []

    def add(build: type[Message], **fields: object) -> None:
        position, at = log.next()
        out.append(Relayed(position, build(deployment_id=d, at=at, **fields)))

    add(
        DeploymentRequested,
        repo_url=repo_url,
        branch=branch,
        watch=True,
        trigger=trigger,
        actor="admin",
    )
    add(DeploymentInitialized, app=app, repo_url=repo_url, branch=branch, trigger=trigger)
    if first:
        position, at = log.next()
        out.append(
            Relayed(
                position,
                AppWatchChanged(app=app, repo_url=repo_url, branch=branch, watching=True, at=at),
            )
        )
    if outcome is DeploymentStatus.CANCELLED:
        add(DeploymentCancelled, app=app, stage=DeploymentStatus.INITIALIZED, actor="admin")
        return d, out
    add(DeploymentScheduled, app=app, node_id=node_id)
    add(DeploymentProgressed, app=app, stage=Stage.CLONING, node_id=node_id)
    add(DeploymentProgressed, app=app, stage=Stage.BUILDING, node_id=node_id, commit=commit)
    if outcome is DeploymentStatus.ERRORED:
        add(
            DeploymentErrored,
            app=app,
            stage=DeploymentStatus.BUILDING,
            reason="pip install failed: no matching distribution for flask==99",
        )
        return d, out
    add(DeploymentProgressed, app=app, stage=Stage.STARTING, node_id=node_id, commit=commit)
    add(
        DeploymentRunning,
        app=app,
        node_id=node_id,
        commit=commit,
        url=f"http://{app}.apps.example.com",
    )
    return d, out


def superseded(log: Log, old: uuid.UUID, *, app: str, by: uuid.UUID) -> Relayed:
    """The old deployment's SUPERSEDED, after the new one took the route."""
    position, at = log.next()
    return Relayed(position, DeploymentSuperseded(deployment_id=old, app=app, by=by, at=at))


def refused_cancel(
    position: int, deployment_id: uuid.UUID, *, app: str, status: DeploymentStatus, at: datetime
) -> Relayed:
    """Alice's cancel, refused: the deployment had already reached ``status``."""
    reason = f"cancel by alice refused: the deployment was already {status} when it arrived"
    return Relayed(
        position,
        DeploymentCancelRefused(
            deployment_id=deployment_id, app=app, status=status, actor="alice", reason=reason, at=at
        ),
    )


@dataclass(frozen=True)
class Story:
    """A small platform history: two apps, a redeploy, a failure and a cancellation."""

    relayed: list[Relayed]
    first: uuid.UUID  # hello, SUPERSEDED by second
    second: uuid.UUID  # hello, RUNNING (current)
    failed: uuid.UUID  # hello, ERRORED
    cancelled: uuid.UUID  # other, CANCELLED
    other: uuid.UUID  # other, RUNNING


def story(start: int = 1) -> Story:
    """The platform history most tests replay."""
    log = Log(start)
    first, a = deployment(log, app="hello", commit=sha(1), first=True)
    second, b = deployment(log, app="hello", commit=sha(2))
    swap = superseded(log, first, app="hello", by=second)
    failed, c = deployment(log, app="hello", commit=sha(3), outcome=DeploymentStatus.ERRORED)
    other, d = deployment(
        log, app="other", repo_url="https://git.example.com/team/other.git", first=True
    )
    cancelled, e = deployment(
        log,
        app="other",
        repo_url="https://git.example.com/team/other.git",
        outcome=DeploymentStatus.CANCELLED,
    )
    return Story([*a, *b, swap, *c, *d, *e], first, second, failed, cancelled, other)


def test_story_messages_satisfy_the_contracts() -> None:
    for item in story().relayed:
        assert decode_message(encode(item.message)) == item.message


def test_story_positions_increase() -> None:
    positions = [r.position for r in story(start=10).relayed]
    assert positions == list(range(10, 10 + len(positions)))


@pytest.mark.parametrize(
    ("outcome", "last"),
    [
        (DeploymentStatus.RUNNING, DeploymentRunning),
        (DeploymentStatus.ERRORED, DeploymentErrored),
        (DeploymentStatus.CANCELLED, DeploymentCancelled),
    ],
)
def test_deployment_ends_with_its_outcome(outcome: DeploymentStatus, last: type[Message]) -> None:
    _, relayed = deployment(Log(), app="x", outcome=outcome)
    assert isinstance(relayed[-1].message, last)
