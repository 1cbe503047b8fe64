"""Polling: every watched (repository, branch) once per interval, spread with jitter."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable

import anyio

from shipwreck_contracts import Trigger
from shipwreck_contracts.gitpolicy import RefusedRemote
from shipwreck_watcher.remote import HeadLister, RemoteError
from shipwreck_watcher.service import WatcherService

log = logging.getLogger(__name__)


class Poller:
    """Checks each watched pair once per ``interval`` (one remote check per pair, however
    many apps share it), each at its own jittered offset so checks do not come in storms."""

    def __init__(
        self,
        service: WatcherService,
        lister: HeadLister,
        *,
        interval: float,
        jitter: float = 0.1,
        concurrency: int = 16,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.lister = lister
        self.interval = interval
        self.jitter = jitter
        self.monotonic = monotonic
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.due: dict[uuid.UUID, float] = {}
        self.checks = 0

    def _next_due(self, now: float) -> float:
        spread = self.interval * self.jitter
        return now + self.interval + random.uniform(-spread, spread)  # noqa: S311 - not crypto

    def due_now(self, now: float) -> list[uuid.UUID]:
        """Pairs whose check is due; a newly watched pair is due at a random offset."""
        ready = []
        for repo_id in list(self.service.watched):
            if repo_id not in self.due:
                self.due[repo_id] = now + random.uniform(0, self.interval)  # noqa: S311
            if self.due[repo_id] <= now:
                ready.append(repo_id)
        for gone in set(self.due) - set(self.service.watched):
            del self.due[gone]
        return ready

    def check_soon(self, repo_id: uuid.UUID) -> None:
        """Check ``repo_id`` at the next tick instead of at its turn."""
        if self.due.get(repo_id) != float("inf"):  # not while a check of it runs
            self.due[repo_id] = self.monotonic()

    async def check(self, repo_id: uuid.UUID) -> bool:
        """Ask the remote for the head of one pair and record it; True on a new commit."""
        pair = self.service.watched.get(repo_id)
        self.due[repo_id] = self._next_due(self.monotonic())
        if pair is None:
            return False
        repo_url, branch = pair
        self.checks += 1
        try:
            head = await anyio.to_thread.run_sync(
                self.lister.head, repo_url, branch, limiter=self.limiter
            )
        except (RemoteError, RefusedRemote) as e:
            log.warning("watch check of %s#%s failed: %s", repo_url, branch, e)
            return False
        if head is None:
            log.warning("watched branch %s of %s does not exist (any more)", branch, repo_url)
            return False
        return await anyio.to_thread.run_sync(
            self.service.observe, repo_url, branch, head, Trigger.WATCH
        )

    async def run(self, tick: float = 0.25) -> None:
        """Check what is due, forever."""
        async with anyio.create_task_group() as tg:
            while True:
                for repo_id in self.due_now(self.monotonic()):
                    # Push the due time now so a slow check is not started twice.
                    self.due[repo_id] = float("inf")
                    tg.start_soon(self.check, repo_id)
                await asyncio.sleep(tick)
