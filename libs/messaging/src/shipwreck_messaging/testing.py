"""Unit-test helpers around FastStream's in-memory RabbitMQ broker.

The in-memory broker routes a publish to the subscribers whose exchange and binding match,
without a RabbitMQ server. It knows only each queue's own routing key, while a Shipwreck
queue is bound to every tag of its :class:`~shipwreck_messaging.topology.Route`; the helper
teaches it those extra bindings, so a handler sees in memory what it sees on RabbitMQ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import faststream.rabbit.testing as fs_testing
from faststream.rabbit import RabbitBroker, RabbitExchange, TestRabbitBroker

from shipwreck_contracts.base import Message
from shipwreck_messaging.publishing import publish
from shipwreck_messaging.routes import TOPOLOGY
from shipwreck_messaging.topology import Topology


@asynccontextmanager
async def in_memory(
    broker: RabbitBroker, topology: Topology = TOPOLOGY
) -> AsyncIterator[RabbitBroker]:
    """Run ``broker``'s subscribers in memory, with every binding of ``topology``."""
    original = fs_testing._is_handler_matches

    def matches(
        handler: Any,
        routing_key: str,
        headers: Mapping[Any, Any] | None = None,
        exchange: RabbitExchange | None = None,
    ) -> bool:
        route = topology.routes.get(handler.queue.name)
        if route is not None and routing_key in route.tags:
            target = RabbitExchange.validate(exchange)
            if handler.exchange is not None and handler.exchange.name == target.name:
                return True
        return original(handler, routing_key, headers, exchange)

    with mock.patch.object(fs_testing, "_is_handler_matches", matches):
        async with TestRabbitBroker(broker) as test_broker:
            yield test_broker


async def deliver(broker: RabbitBroker, message: Message) -> None:
    """Publish ``message`` as the platform does (events exchange, routing key = tag)."""
    await publish(broker, message)
