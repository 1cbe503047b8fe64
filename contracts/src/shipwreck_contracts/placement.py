"""Placement: the orchestrator asks the scheduler for a node, the scheduler decides.

The scheduler's decision is a pure function of its node snapshot and the request; it
publishes the scores that led to it so that a decision can be explained after the fact.
``attempt`` is echoed back so the orchestrator can drop an answer to an earlier attempt.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from .base import Message
from .values import AppName, Attempt, AwareDatetime, Megabytes


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What a deployment needs from a node; also the container's limits there."""

    cpus: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    memory_mb: Megabytes = 256


class NodeScore(msgspec.Struct, frozen=True, kw_only=True):
    """How one node scored for one placement, and why.

    ``feasible`` is false for a node that could not take the work at all (drained, lost,
    not enough memory); its ``reasons`` say why.
    """

    node_id: uuid.UUID
    score: float
    feasible: bool = True
    reasons: list[str] = []


class RequestPlacement(Message, tag="placement.request.v1", frozen=True, kw_only=True):
    """Choose a node for a deployment.

    ``preferred_node_id`` is the node currently serving the app: a redeploy there can take
    over the route on the same proxy. ``avoid_node_ids`` are nodes an earlier attempt failed
    on or lost.
    """

    deployment_id: uuid.UUID
    app: AppName
    attempt: Attempt = 1
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    preferred_node_id: uuid.UUID | None = None
    avoid_node_ids: list[uuid.UUID] = []
    requested_at: AwareDatetime


class PlacementDecided(Message, tag="placement.decided.v1", frozen=True, kw_only=True):
    """The scheduler chose ``node_id`` for a deployment."""

    deployment_id: uuid.UUID
    app: AppName
    attempt: Attempt = 1
    node_id: uuid.UUID
    scores: list[NodeScore] = []
    decided_at: AwareDatetime


class PlacementFailed(Message, tag="placement.failed.v1", frozen=True, kw_only=True):
    """No node can take the deployment; ``reason`` says why, for people."""

    deployment_id: uuid.UUID
    app: AppName
    attempt: Attempt = 1
    reason: str
    scores: list[NodeScore] = []
    decided_at: AwareDatetime
