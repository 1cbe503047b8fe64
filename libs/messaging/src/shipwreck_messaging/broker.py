"""The one way a Shipwreck process builds its RabbitMQ broker."""

from __future__ import annotations

import logging

from fast_depends.msgspec import MsgSpecSerializer
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker

from shipwreck_messaging.topology import (
    Route,
    Topology,
    dead_letter_exchange,
    dead_letter_queue,
    events_exchange,
)


def create_broker(
    amqp_url: str,
    *,
    app_id: str,
    prefetch: int = 1,
) -> RabbitBroker:
    """A broker that speaks msgspec, confirms every publish and never drops on error.

    Subscribers registered on it default to ``NACK_ON_ERROR``: a failed handler
    requeues its message, and the quorum queue's delivery limit dead-letters poison.
    aio-pika runs every delivered message as its own task, so ``prefetch`` is also the
    handler concurrency; the default of 1 keeps each queue in order (stage reports must
    not overtake each other). Subscribers that do not care may pass their own channel.
    """
    return RabbitBroker(
        amqp_url,
        app_id=app_id,
        serializer=MsgSpecSerializer(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True),
        # Fail start-up quickly when RabbitMQ is down, so the operator sees why.
        fail_fast=True,
        # Per-message "Received"/"Processed" lines are debug detail, not operations news.
        log_level=logging.DEBUG,
    )


async def declare_route(broker: RabbitBroker, route: Route) -> None:
    """Declare one queue, bind every tag of it to the events exchange and unbind the keys
    it no longer takes (idempotent)."""
    exchange = await broker.declare_exchange(events_exchange())
    queue = await broker.declare_queue(route.declaration())
    for tag in route.tags:
        await queue.bind(exchange, routing_key=tag)
    for key in route.retired:
        await queue.unbind(exchange, routing_key=key)


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    """Declare the exchanges, the dead-letter queue and every routed queue (idempotent)."""
    await broker.declare_exchange(events_exchange())
    dlx = await broker.declare_exchange(dead_letter_exchange())
    dlq = await broker.declare_queue(dead_letter_queue())
    await dlq.bind(dlx, routing_key="")
    for route in topology.routes.values():
        await declare_route(broker, route)
