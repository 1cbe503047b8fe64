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
    - ``SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS``: how long one check waits on the remote at any
      one point (connecting, then each read of its answer), for ``https://``, ``git://`` and
      ``ssh://`` remotes alike (over ssh, the ``ssh`` process is killed past it). Past it the
      check fails, naming the remote and this limit, its slot is freed and the pair is
      checked again at its next interval. It bounds each wait, not the whole check (a remote
      that answers slowly but steadily takes longer), nor the DNS look-up of the host (the
      system resolver's own limits apply).
    """

    watch_interval: PositiveSeconds = 60.0
    watch_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    watch_concurrency: Count = 16
    ls_remote_timeout_seconds: PositiveSeconds = 10.0
    git_allow_private: bool = False
