"""Node settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

import socket
import uuid

from shipwreck_runtime import CommonSettings


class NodeSettings(CommonSettings, frozen=True, kw_only=True):
    """``SHIPWRECK_NODE_NAME`` (default: the hostname) names the node; its id derives from it,
    so a restarted node keeps its identity and its work queue."""

    node_name: str = ""
    heartbeat_seconds: float = 2.0

    @property
    def name(self) -> str:
        """The node's name (the hostname unless set)."""
        return self.node_name or socket.gethostname()

    @property
    def node_id(self) -> uuid.UUID:
        """A stable id for this node name."""
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"node.shipwreck/{self.name}")
