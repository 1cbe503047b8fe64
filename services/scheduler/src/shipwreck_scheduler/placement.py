"""Placement: a pure decision over a snapshot of the nodes.

``plan(nodes, request, now, timeout, assigned)`` scores every node and picks the best
feasible one. Scores are returned for all nodes, so the deployment records why its node won.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shipwreck_contracts import NodeScore, PlacementDecided, PlacementFailed, RequestPlacement
from shipwreck_scheduler.nodes import NodeView

# Weights: each deployment a node runs or was just given costs more than a point of load,
# so deployments spread across nodes on the same machine (whose load is shared).
W_DEPLOYMENT = 10.0
W_LOAD = 30.0
W_FREE_MEMORY = 20.0


@dataclass(frozen=True)
class Snapshot:
    """What placement looks at: nodes, and the deployments assigned to each."""

    nodes: Sequence[NodeView]
    assigned: Mapping[uuid.UUID, int]


def score(
    node: NodeView, request: RequestPlacement, now: datetime, timeout: timedelta, assigned: int
) -> NodeScore:
    """How good ``node`` is for ``request``; infeasible nodes say why."""
    reasons: list[str] = []
    feasible = True
    if node.last_seen_at is None or now - node.last_seen_at > timeout:
        feasible = False
        reasons.append(f"no heartbeat for more than {timeout.total_seconds():g} s")
    if node.node_id in request.avoid_node_ids:
        feasible = False
        reasons.append("avoided by the request (it failed there before)")
    need = request.requirements.memory_mb
    if node.mem_free_mb < need:
        feasible = False
        reasons.append(f"{node.mem_free_mb} MiB free < {need} MiB needed")
    load_share = node.load_avg / max(node.cpu_count, 1)
    free_share = node.mem_free_mb / node.mem_total_mb if node.mem_total_mb else 0.0
    value = W_FREE_MEMORY * free_share - W_LOAD * load_share - W_DEPLOYMENT * assigned
    reasons.append(
        f"{assigned} deployments, load {node.load_avg:.2f} on {node.cpu_count} cpus, "
        f"{node.mem_free_mb}/{node.mem_total_mb} MiB free"
    )
    if request.preferred_node_id == node.node_id:
        value += W_DEPLOYMENT / 2
        reasons.append("serves the app now (preferred)")
    return NodeScore(
        node_id=node.node_id, score=round(value, 3), feasible=feasible, reasons=reasons
    )


def plan(
    snapshot: Snapshot, request: RequestPlacement, now: datetime, timeout: timedelta
) -> PlacementDecided | PlacementFailed:
    """Choose the best feasible node for ``request``, or say why none fits."""
    scores = sorted(
        (
            score(n, request, now, timeout, snapshot.assigned.get(n.node_id, 0))
            for n in snapshot.nodes
        ),
        key=lambda s: (not s.feasible, -s.score, str(s.node_id)),
    )
    if not scores or not scores[0].feasible:
        reason = (
            "no live node"
            if not scores
            else "no node fits: "
            + "; ".join(f"{s.node_id}: {', '.join(s.reasons[:-1])}" for s in scores)
        )
        return PlacementFailed(
            deployment_id=request.deployment_id,
            app=request.app,
            attempt=request.attempt,
            reason=reason,
            scores=scores,
            decided_at=now,
        )
    return PlacementDecided(
        deployment_id=request.deployment_id,
        app=request.app,
        attempt=request.attempt,
        node_id=scores[0].node_id,
        scores=scores,
        decided_at=now,
    )
