"""The scheduler's live view of the nodes: a pure table fed by heartbeats."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from shipwreck_contracts import NodeHeartbeat, NodeRegistered, NodeReturned

PROBE_EVERY: Final = timedelta(seconds=1)
"""How often the scheduler sends itself a probe through the broker, however often it checks
for silent nodes: proof enough that it hears the broker (see ``deaf``), for one message a
second."""


class KnownNodeFacts(Protocol):
    """A node recorded before a restart (see ``registry.KnownNode``)."""

    @property
    def node_id(self) -> uuid.UUID: ...
    @property
    def hostname(self) -> str: ...
    @property
    def cpu_count(self) -> int: ...
    @property
    def mem_total_mb(self) -> int: ...
    @property
    def lost(self) -> bool: ...


@dataclass
class NodeView:
    """What the scheduler knows of one node."""

    node_id: uuid.UUID
    hostname: str
    cpu_count: int
    mem_total_mb: int
    mem_free_mb: int = 0
    load_avg: float = 0.0
    running: list[uuid.UUID] = field(default_factory=list)
    last_seen_at: datetime | None = None
    reported: bool = True
    """Whether its free memory and load come from a heartbeat: a node restored from the
    store, or only registered, has none yet and is not placed on until it reports."""


@dataclass
class NodeTable:
    """Nodes by id, updated from registrations and heartbeats."""

    nodes: dict[uuid.UUID, NodeView] = field(default_factory=dict)
    lost: set[uuid.UUID] = field(default_factory=set)
    heard_at: datetime | None = None
    """When the scheduler last received a heartbeat or its own probe (its own clock)."""

    def register(self, msg: NodeRegistered) -> bool:
        """Record a registration; True when the node was not known before.

        A lost node that registers has restarted: it is live again, and gets its assignment
        for registering (not for returning as well: see `returning`).
        """
        known = msg.node_id in self.nodes
        self.lost.discard(msg.node_id)
        view = self.nodes.get(msg.node_id) or NodeView(
            msg.node_id, msg.hostname, msg.cpu_count, msg.mem_total_mb, reported=False
        )
        view.hostname, view.cpu_count = msg.hostname, msg.cpu_count
        view.mem_total_mb = msg.mem_total_mb
        view.last_seen_at = max(filter(None, (view.last_seen_at, msg.started_at)))
        self.nodes[msg.node_id] = view
        return not known

    def returning(self, msg: NodeHeartbeat) -> NodeReturned | None:
        """What to announce if ``msg`` brings back a node declared lost (see `heartbeat`):
        it was cut off and comes back with whatever it ran, some of which went elsewhere."""
        view = self.nodes.get(msg.node_id)
        if msg.node_id not in self.lost or view is None or view.last_seen_at is None:
            return None
        if msg.at < view.last_seen_at:
            return None  # a late heartbeat, from before it went silent
        return NodeReturned(
            node_id=msg.node_id, hostname=msg.hostname, silent_since=view.last_seen_at, at=msg.at
        )

    def heartbeat(self, msg: NodeHeartbeat) -> bool:
        """Record a heartbeat; True when it introduced a node not seen before."""
        view = self.nodes.get(msg.node_id)
        new = view is None
        if view is None:
            view = NodeView(msg.node_id, msg.hostname, msg.cpu_count, msg.mem_total_mb)
            self.nodes[msg.node_id] = view
        if view.last_seen_at is not None and msg.at < view.last_seen_at:
            return new  # a late heartbeat never rolls the view back
        view.hostname, view.cpu_count = msg.hostname, msg.cpu_count
        view.mem_total_mb, view.mem_free_mb = msg.mem_total_mb, msg.mem_free_mb
        view.load_avg, view.running = msg.load_avg, list(msg.running)
        view.reported = True
        view.last_seen_at = msg.at
        # A lost node that comes back is placeable again; its old work stays fenced (the
        # orchestrator ignores reports of abandoned attempts).
        self.lost.discard(msg.node_id)
        return new

    def heard(self, now: datetime, deaf_after: timedelta) -> None:
        """A heartbeat or the scheduler's own probe arrived at ``now`` (its clock).

        After a stretch in which the scheduler heard nobody (its broker restarting, say)
        every node counts as seen ``now``: their silence was the scheduler's deafness, so
        each gets a full timeout again, and placement may use them meanwhile.
        """
        if self.deaf(now, deaf_after):
            for view in self.nodes.values():
                if view.node_id not in self.lost and view.last_seen_at is not None:
                    view.last_seen_at = max(view.last_seen_at, now)
        self.heard_at = now

    def deaf(self, now: datetime, deaf_after: timedelta) -> bool:
        """Whether the scheduler has heard nothing at all for ``deaf_after``."""
        return self.heard_at is not None and now - self.heard_at > deaf_after

    def silent(self, now: datetime, timeout: timedelta, deaf_after: timedelta) -> list[NodeView]:
        """Nodes silent for longer than ``timeout``, not yet declared lost.

        None while the scheduler itself hears nobody (for ``deaf_after``), or has heard
        nothing yet: a scheduler cut off from the broker must not declare every node lost.
        """
        if self.heard_at is None or self.deaf(now, deaf_after):
            return []
        return [
            v
            for v in self.nodes.values()
            if v.node_id not in self.lost
            and v.last_seen_at is not None
            and now - v.last_seen_at > timeout
        ]

    def mark_lost(self, node_id: uuid.UUID) -> None:
        """The loss is recorded: do not declare it again until the node is back."""
        self.lost.add(node_id)

    def restore(self, known: Iterable[KnownNodeFacts], now: datetime) -> int:
        """Add the nodes recorded before a restart, as seen ``now``: each gets a full timeout.

        Nodes already heard from since the start keep what they said. Returns how many were
        added.
        """
        added = 0
        for node in known:
            if node.lost:
                self.lost.add(node.node_id)
            if node.node_id in self.nodes:
                continue
            self.nodes[node.node_id] = NodeView(
                node.node_id,
                node.hostname,
                node.cpu_count,
                node.mem_total_mb,
                last_seen_at=now,
                reported=False,
            )
            added += 1
        return added

    def live(self, now: datetime, timeout: timedelta) -> list[NodeView]:
        """Nodes heard from within ``timeout`` of ``now``."""
        return [
            v
            for v in self.nodes.values()
            if v.last_seen_at is not None and now - v.last_seen_at <= timeout
        ]

    def placeable(self, now: datetime, timeout: timedelta) -> list[NodeView]:
        """Live nodes whose free memory and load are known (from a heartbeat)."""
        return [v for v in self.live(now, timeout) if v.reported]


@dataclass
class ProbeSchedule:
    """When a liveness round also sends the scheduler's probe: at most once per ``every``.

    The rounds run often, so that a silent node is declared lost soon after its timeout;
    each probe is a message through the broker, and one a second tells deafness well enough.
    """

    every: timedelta = PROBE_EVERY
    sent_at: datetime | None = None

    def due(self, now: datetime) -> bool:
        """Whether the round at ``now`` sends a probe (and, if so, that it was sent then)."""
        if self.sent_at is not None and self.sent_at <= now < self.sent_at + self.every:
            return False
        self.sent_at = now
        return True
