"""Background loops that live and die with a service (relays, heartbeats, pollers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Starts coroutines after the broker is up and cancels them on shutdown."""

    def __init__(self) -> None:
        self._factories: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Register a loop to start with :meth:`start`."""
        self._factories.append((name, factory))

    async def start(self) -> None:
        """Start every registered loop."""
        for name, factory in self._factories:
            task: asyncio.Task[None] = asyncio.create_task(_guard(name, factory), name=name)
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel every loop and wait for it to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


async def _guard(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    # A loop that dies must be loud: a silent relay means nothing is published.
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task %s crashed", name)
        raise
