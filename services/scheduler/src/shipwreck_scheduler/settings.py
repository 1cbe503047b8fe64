"""Scheduler settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import PositiveSeconds, Seconds, StoreSettings


class SchedulerSettings(StoreSettings, frozen=True, kw_only=True):
    """Scheduler settings.

    - ``SHIPWRECK_NODE_TIMEOUT_SECONDS``: silence after which a node counts as lost (10).
    - ``SHIPWRECK_LIVENESS_CHECK_SECONDS``: how often silence is checked (0.25): a node is
      declared lost up to this much after its timeout. The scheduler's probe through the
      broker goes with a check at most once a second.
    - ``SHIPWRECK_DEAF_AFTER_SECONDS``: when nothing at all has been heard for this long (no
      heartbeat, none of its own probes through the broker), the scheduler doubts its own
      link to the broker and declares nobody lost; once it hears again every node gets a
      full timeout (5; nodes heartbeat every 2 s).
    - ``SHIPWRECK_PLACEMENT_WAIT_SECONDS``: how long a placement request waits for a live
      node when there is none (30), before it fails with "no live node".
    """

    node_timeout_seconds: PositiveSeconds = 10.0
    liveness_check_seconds: PositiveSeconds = 0.25
    deaf_after_seconds: PositiveSeconds = 5.0
    placement_wait_seconds: Seconds = 30.0
