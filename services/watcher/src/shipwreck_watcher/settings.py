"""Watcher settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import StoreSettings


class WatcherSettings(StoreSettings, frozen=True, kw_only=True):
    """Watcher settings.

    - ``SHIPWRECK_WATCH_INTERVAL``: seconds between checks of one (repository, branch).
    - ``SHIPWRECK_WATCH_JITTER``: how far a check may move from its interval, as a fraction
      of it, so that checks do not come in bursts.
    - ``SHIPWRECK_WATCH_CONCURRENCY``: how many checks may run at once.
    - ``SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS``: the time limit of one check of an https://
      remote; dulwich takes no timeout for git:// and ssh:// remotes, so theirs have none.
    """

    watch_interval: float = 60.0
    watch_jitter: float = 0.1
    watch_concurrency: int = 16
    ls_remote_timeout_seconds: float = 10.0
    git_allow_private: bool = False
