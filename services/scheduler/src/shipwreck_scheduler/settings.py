"""Scheduler settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import StoreSettings


class SchedulerSettings(StoreSettings, frozen=True, kw_only=True):
    """``SHIPWRECK_NODE_TIMEOUT_SECONDS``: silence after which a node counts as lost."""

    node_timeout_seconds: float = 10.0
    liveness_check_seconds: float = 1.0
