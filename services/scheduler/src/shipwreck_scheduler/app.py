"""The scheduler's composition root."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import NodeHeartbeat, NodeRegistered
from shipwreck_messaging import create_broker, events_exchange
from shipwreck_messaging.routes import SCHEDULER_NODES
from shipwreck_messaging.service import build_service
from shipwreck_scheduler.nodes import NodeTable
from shipwreck_scheduler.settings import SchedulerSettings


def create_app(
    settings: SchedulerSettings,
    *,
    broker: RabbitBroker | None = None,
    table: NodeTable | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the scheduler: node liveness from registrations and heartbeats."""
    log = logger or logging.getLogger("shipwreck.scheduler")
    broker = broker or create_broker(settings.amqp_url, app_id="scheduler")
    nodes = table if table is not None else NodeTable()
    inbox = broker.subscriber(SCHEDULER_NODES.declaration(), events_exchange())

    @inbox(filter=lambda m: m.raw_message.routing_key == NodeRegistered.__struct_config__.tag)
    async def on_registered(msg: NodeRegistered) -> None:
        if nodes.register(msg):
            log.info("node %s (%s) registered", msg.hostname, msg.node_id)

    @inbox(filter=lambda m: m.raw_message.routing_key == NodeHeartbeat.__struct_config__.tag)
    async def on_heartbeat(msg: NodeHeartbeat) -> None:
        if nodes.heartbeat(msg):
            log.info("node %s (%s) first heard from", msg.hostname, msg.node_id)

    return build_service("scheduler", broker, log)
