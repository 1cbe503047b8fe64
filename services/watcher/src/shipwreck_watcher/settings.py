"""Watcher settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shipwreck_runtime import Count, PositiveSeconds, StoreSettings


class WatcherSettings(StoreSettings, frozen=True, kw_only=True):
    """Watcher settings.

    - ``SHIPWRECK_WATCH_INTERVAL``: seconds between checks of one (repository, branch).
    - ``SHIPWRECK_WATCH_JITTER``: how far a check may move from its interval, as a fraction
      of it (0 to 1), so that checks do not come in bursts.
    - ``SHIPWRECK_WATCH_CONCURRENCY``: how many checks may run at once.
    - ``SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS``: the time limit of one check of an https://
      remote; dulwich takes no timeout for git:// and ssh:// remotes, so theirs have none.
    """

    watch_interval: PositiveSeconds = 60.0
    watch_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    watch_concurrency: Count = 16
    ls_remote_timeout_seconds: PositiveSeconds = 10.0
    git_allow_private: bool = False
