"""Where messages go: the exchanges, the queues, and which tags each queue receives.

The whole topology is declared here, in one table, so that every service declares the
same durable objects at start-up. A message published while its consumer is down then
still has a queue to wait in (invariant 6: no message is lost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

EXCHANGE = "shipwreck"
"""Durable topic exchange for every integration event and command; routing key = tag."""

DEAD_LETTER_EXCHANGE = "shipwreck.dead"
"""Fanout exchange that quorum queues dead-letter into after their delivery limit."""

DEAD_LETTER_QUEUE = "shipwreck.dead-letters"
"""The one queue holding every dead-lettered message, for inspection and replay."""

DEFAULT_DELIVERY_LIMIT = 5
"""Deliveries before a message is dead-lettered instead of looping forever."""


def events_exchange() -> RabbitExchange:
    """The durable topic exchange that carries every tagged message."""
    return RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True)


def dead_letter_exchange() -> RabbitExchange:
    """The exchange poison messages are moved to."""
    return RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)


def quorum_queue(
    name: str,
    *,
    routing_key: str = "",
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    dead_letter_to: str = DEAD_LETTER_EXCHANGE,
) -> RabbitQueue:
    """A durable quorum queue that dead-letters after ``delivery_limit`` deliveries."""
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments={
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": dead_letter_to,
        },
    )


def dead_letter_queue() -> RabbitQueue:
    """The queue bound to the dead-letter exchange (itself never dead-letters)."""
    return RabbitQueue(DEAD_LETTER_QUEUE, queue_type=QueueType.QUORUM, durable=True)


@dataclass(frozen=True)
class Route:
    """A service queue and the tags (routing keys) bound to it."""

    queue: str
    tags: tuple[str, ...]
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    # Keys an earlier version bound to this queue and this one does not: bindings outlive
    # the services that made them, so an upgraded platform unbinds them at start-up.
    retired: tuple[str, ...] = ()

    def declaration(self) -> RabbitQueue:
        """The queue object to declare and consume."""
        # The first tag is the subscriber's own binding; the rest are bound by declare_topology.
        first = self.tags[0] if self.tags else ""
        return quorum_queue(self.queue, routing_key=first, delivery_limit=self.delivery_limit)


@dataclass
class Topology:
    """Every service queue with its bindings. Built once, declared by every service."""

    routes: dict[str, Route] = field(default_factory=dict)

    def add(
        self,
        queue: str,
        tags: Iterable[str],
        *,
        delivery_limit: int = 0,
        retired: Iterable[str] = (),
    ) -> Route:
        """Register a queue receiving ``tags`` (and no longer ``retired``); returns its route."""
        route = Route(queue, tuple(tags), delivery_limit or DEFAULT_DELIVERY_LIMIT, tuple(retired))
        if queue in self.routes and self.routes[queue] != route:
            raise ValueError(f"queue {queue!r} is already routed differently")
        self.routes[queue] = route
        return route

    def __getitem__(self, queue: str) -> Route:
        return self.routes[queue]


def node_work_queue_name(node_id: str) -> str:
    """Name of a node's own work queue (``node.<id>``)."""
    return f"node.{node_id}"


def node_work_routing_key(node_id: str) -> str:
    """Routing key that targets one node's work queue on the topic exchange."""
    return f"work.{node_id}"


def node_work_route(node_id: str) -> Route:
    """The route of one node's work queue."""
    return Route(node_work_queue_name(node_id), (node_work_routing_key(node_id),))
