"""The api's read model of nodes, projected from heartbeats (never another service's state)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shipwreck_contracts import NodeHeartbeat


@dataclass(frozen=True)
class NodeRow:
    """One node as the api shows it."""

    node_id: uuid.UUID
    hostname: str
    cpu_count: int
    mem_total_mb: int
    mem_free_mb: int
    load_avg: float
    last_seen_at: datetime
    running: tuple[uuid.UUID, ...]


@dataclass
class NodesView:
    """Latest heartbeat per node."""

    rows: dict[uuid.UUID, NodeRow] = field(default_factory=dict)

    def apply(self, msg: NodeHeartbeat) -> None:
        """Fold one heartbeat in; an older one than we have changes nothing."""
        current = self.rows.get(msg.node_id)
        if current is not None and current.last_seen_at >= msg.at:
            return
        self.rows[msg.node_id] = NodeRow(
            node_id=msg.node_id,
            hostname=msg.hostname,
            cpu_count=msg.cpu_count,
            mem_total_mb=msg.mem_total_mb,
            mem_free_mb=msg.mem_free_mb,
            load_avg=msg.load_avg,
            last_seen_at=msg.at,
            running=tuple(msg.running),
        )

    def all(self) -> list[NodeRow]:
        """Every node, by hostname."""
        return sorted(self.rows.values(), key=lambda r: (r.hostname, str(r.node_id)))
