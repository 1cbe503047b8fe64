"""Background loops that live and die with a service (relays, heartbeats, pollers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Starts coroutines after the broker is up and cancels them on shutdown."""

    def __init__(
        self,
        *,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stop_timeout = stop_timeout
        self._factories: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Register a loop to start with :meth:`start`."""
        self._factories.append((name, factory))

    async def start(self) -> None:
        """Start every registered loop."""
        for name, factory in self._factories:
            task: asyncio.Task[None] = asyncio.create_task(self._guard(name, factory), name=name)
            self._tasks.append(task)

    async def _guard(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        # A loop that dies must be loud, and must come back: a silent relay means nothing
        # is published, a dead heartbeat makes a healthy node look lost. Restarts back off
        # (1 s to 30 s by default), so a loop failing at once (the broker down for a while)
        # does not spin.
        delay = self.restart_delay
        while True:
            began = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s crashed; restarting it in %.1f s", name, delay)
            if time.monotonic() - began > 60:
                delay = self.restart_delay  # it ran well for a while: a new failure
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_restart_delay)

    async def stop(self) -> None:
        """Cancel every loop and wait for it to end, at most ``stop_timeout`` seconds.

        Bounded, so that a service always stops: a task cancelled in the middle of an AMQP
        call can fail to end (aiormq 7.2 closes the channel, and now and then the call never
        returns). One that has not ended by then is left behind, and named in the log.
        """
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.stop_timeout)
            for task in pending:
                log.error(
                    "background task %s did not end within %g s of being cancelled; "
                    "stopping without it",
                    task.get_name(),
                    self.stop_timeout,
                )
        self._tasks.clear()
