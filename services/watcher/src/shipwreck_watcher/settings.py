"""Watcher settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import StoreSettings


class WatcherSettings(StoreSettings, frozen=True, kw_only=True):
    """``SHIPWRECK_WATCH_INTERVAL``: seconds between checks of one (repository, branch)."""

    watch_interval: float = 60.0
    watch_jitter: float = 0.1
    watch_concurrency: int = 16
    ls_remote_timeout_seconds: float = 10.0
    git_allow_private: bool = False
