"""The GraphQL schema (DESIGN section 7); resolvers read the api's own read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from shipwreck_api.readmodel import NodeRow, NodesView


@strawberry.type
class Node:
    """A worker node, as last reported by its heartbeat."""

    id: strawberry.ID
    hostname: str
    status: str
    cpu_count: int
    mem_total_mb: int
    mem_free_mb: int
    load_avg: float
    last_seen_at: datetime

    @staticmethod
    def from_row(row: NodeRow) -> Node:
        """The GraphQL view of a read-model row."""
        return Node(
            id=strawberry.ID(str(row.node_id)),
            hostname=row.hostname,
            status="READY",
            cpu_count=row.cpu_count,
            mem_total_mb=row.mem_total_mb,
            mem_free_mb=row.mem_free_mb,
            load_avg=row.load_avg,
            last_seen_at=row.last_seen_at,
        )


@strawberry.type
class Query:
    """Read-only questions, answered from the api's read model."""

    @strawberry.field(description="Every node that has sent a heartbeat.")
    def nodes(self, info: Info[dict[str, Any], None]) -> list[Node]:
        view: NodesView = info.context["nodes"]
        return [Node.from_row(row) for row in view.all()]


schema = strawberry.Schema(query=Query)
