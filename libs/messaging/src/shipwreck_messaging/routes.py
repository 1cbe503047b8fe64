"""The platform's queues and the message tags each one receives (one table, every service).

Every service declares the whole table at start-up, so a command or report published
while its consumer is down waits in a durable quorum queue instead of being unroutable.
"""

from __future__ import annotations

from shipwreck_contracts import NodeHeartbeat, NodeRegistered, tag_of
from shipwreck_messaging.topology import Topology

TOPOLOGY = Topology()

# Each queue is bound only to the tags its service handles today: a bound tag with no
# handler would be retried and dead-lettered. Queues grow their bindings with the services.

SCHEDULER_NODES = TOPOLOGY.add(
    "scheduler.nodes",
    [tag_of(m) for m in (NodeRegistered, NodeHeartbeat)],
)
"""Node registrations and heartbeats: the scheduler's view of which nodes are alive."""
