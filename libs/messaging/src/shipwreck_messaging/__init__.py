"""Shipwreck messaging: the broker factory, the topology, and publishing."""

from shipwreck_messaging.broker import create_broker, declare_route, declare_topology
from shipwreck_messaging.publishing import (
    ORIGIN_HEADER,
    POSITION_HEADER,
    PublishFailed,
    message_headers,
    publish,
    tag_filter,
)
from shipwreck_messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    Route,
    Topology,
    events_exchange,
    node_work_queue_name,
    node_work_route,
    node_work_routing_key,
    quorum_queue,
)

__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "EXCHANGE",
    "ORIGIN_HEADER",
    "POSITION_HEADER",
    "PublishFailed",
    "Route",
    "Topology",
    "create_broker",
    "declare_route",
    "declare_topology",
    "events_exchange",
    "message_headers",
    "node_work_queue_name",
    "node_work_route",
    "node_work_routing_key",
    "publish",
    "quorum_queue",
    "tag_filter",
]
