"""What the watcher announces: a new commit on a watched branch (never the baseline)."""

from __future__ import annotations

from typing import Any

from shipwreck_contracts import RepoChanged
from shipwreck_eventstore.relay import Outgoing


def translate(e: Any) -> list[Outgoing]:
    """``repo.changed`` for each new commit after the baseline; nothing else is public."""
    if type(e).__qualname__ == "WatchedRepo.CommitObserved" and not e.baseline:
        return [
            RepoChanged(
                repo_url=e.repo_url,
                branch=e.branch,
                commit=e.commit,
                previous=e.previous,
                trigger=e.trigger,
                delivery_id=e.delivery_id,
                detected_at=e.at,
            )
        ]
    return []
