"""The nodes the scheduler has ever heard of, in its event store (it is their one writer).

Heartbeats stay in memory (`nodes.NodeTable`): they are many and say nothing new. What is
recorded is rare and must outlive a restart of the scheduler: that a node exists (else a
node that dies while the scheduler is down would never be declared lost), that it was
declared lost, and that it came back. The outbox relay announces the last two
(``node.lost``, ``node.returned``), so the orchestrator hears of each once a record exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event

from shipwreck_contracts import NodeLost, NodeReturned
from shipwreck_eventstore import ShipwreckApplication
from shipwreck_eventstore.relay import Outgoing


class Node(Aggregate):
    """One worker node, as far as scheduling needs to remember it."""

    @staticmethod
    def create_id(node_id: uuid.UUID, **_: Any) -> uuid.UUID:
        # Nodes name themselves (a uuid5 of their name): a repeated registration finds it.
        return node_id

    @event("Registered")
    def __init__(
        self, node_id: uuid.UUID, hostname: str, cpu_count: int, mem_total_mb: int, at: datetime
    ) -> None:
        self.hostname = hostname
        self.cpu_count = cpu_count
        self.mem_total_mb = mem_total_mb
        self.lost = False

    def describe(self, hostname: str, cpu_count: int, mem_total_mb: int, at: datetime) -> bool:
        """The node's static facts changed (a bigger machine under the same name, say)."""
        if (hostname, cpu_count, mem_total_mb) == (
            self.hostname,
            self.cpu_count,
            self.mem_total_mb,
        ):
            return False
        self._described(hostname=hostname, cpu_count=cpu_count, mem_total_mb=mem_total_mb, at=at)
        return True

    @event("Described")
    def _described(self, hostname: str, cpu_count: int, mem_total_mb: int, at: datetime) -> None:
        self.hostname, self.cpu_count, self.mem_total_mb = hostname, cpu_count, mem_total_mb

    def lose(self, last_seen_at: datetime, deployments: list[uuid.UUID], at: datetime) -> bool:
        """Declare it lost: silent too long. Once, until it comes back."""
        if self.lost:
            return False
        self._lost(last_seen_at=last_seen_at, deployments=deployments, at=at)
        return True

    @event("Lost")
    def _lost(self, last_seen_at: datetime, deployments: list[uuid.UUID], at: datetime) -> None:
        self.lost = True

    def come_back(self, silent_since: datetime, at: datetime) -> bool:
        """A lost node is heard from again."""
        if not self.lost:
            return False
        self._returned(hostname=self.hostname, silent_since=silent_since, at=at)
        return True

    @event("Returned")
    def _returned(self, hostname: str, silent_since: datetime, at: datetime) -> None:
        self.lost = False


class Scheduler(ShipwreckApplication):
    """The scheduler's event store: the Node registry."""

    name = "scheduler"


class NodeFacts(Protocol):
    """What identifies and sizes a node (a table entry, or a node found in the store)."""

    @property
    def node_id(self) -> uuid.UUID: ...
    @property
    def hostname(self) -> str: ...
    @property
    def cpu_count(self) -> int: ...
    @property
    def mem_total_mb(self) -> int: ...


@dataclass(frozen=True)
class KnownNode:
    """A node found in the store at start-up."""

    node_id: uuid.UUID
    hostname: str
    cpu_count: int
    mem_total_mb: int
    lost: bool


class NodeRegistry:
    """Records what must survive a restart (synchronous: call it from worker threads)."""

    def __init__(
        self, app: Scheduler, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.app = app
        self.clock = clock

    def _get(self, node_id: uuid.UUID) -> Node | None:
        try:
            found: object = self.app.repository.get(node_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Node) else None

    def heard(self, node_id: uuid.UUID, hostname: str, cpu_count: int, mem_total_mb: int) -> bool:
        """Remember a node heard from (registered, or first heartbeat); True if recorded."""
        node = self._get(node_id)
        if node is None:
            node = Node(
                node_id=node_id,
                hostname=hostname,
                cpu_count=cpu_count,
                mem_total_mb=mem_total_mb,
                at=self.clock(),
            )
        elif not node.describe(hostname, cpu_count, mem_total_mb, self.clock()):
            return False
        self.app.save(node)
        return True

    def lost(
        self,
        facts: NodeFacts,
        last_seen_at: datetime,
        deployments: list[uuid.UUID],
    ) -> bool:
        """Record that the node was declared lost (the relay announces ``node.lost``)."""
        node = self._get(facts.node_id)
        if node is None:
            # Heard of but not recorded (its first record failed): record it first.
            node = Node(
                node_id=facts.node_id,
                hostname=facts.hostname,
                cpu_count=facts.cpu_count,
                mem_total_mb=facts.mem_total_mb,
                at=last_seen_at,
            )
        if not node.lose(last_seen_at, deployments, self.clock()):
            return False
        self.app.save(node)
        return True

    def returned(self, node_id: uuid.UUID, silent_since: datetime) -> bool:
        """Record that a lost node is back (the relay announces ``node.returned``)."""
        node = self._get(node_id)
        if node is None or not node.come_back(silent_since, self.clock()):
            return False
        self.app.save(node)
        return True

    def known(self) -> list[KnownNode]:
        """Every node in the store (at start-up, to watch them all again)."""
        found: list[KnownNode] = []
        for notification in self.app.all_notifications():
            if notification.topic.endswith(":Node.Registered"):
                node = self._get(uuid.UUID(str(notification.originator_id)))
                if node is not None:
                    found.append(
                        KnownNode(
                            node.id, node.hostname, node.cpu_count, node.mem_total_mb, node.lost
                        )
                    )
        return found


def translate(e: Any) -> list[Outgoing]:
    """What the relay announces: a node lost, a node back."""
    kind = type(e).__qualname__
    if kind == "Node.Lost":
        return [
            NodeLost(
                node_id=e.originator_id,
                last_seen_at=e.last_seen_at,
                deployments=list(e.deployments),
                at=e.at,
            )
        ]
    if kind == "Node.Returned":
        return [
            NodeReturned(
                node_id=e.originator_id,
                hostname=e.hostname,
                silent_since=e.silent_since,
                at=e.at,
            )
        ]
    return []
