"""Deliveries back in queue order, although they are handled as concurrent tasks.

The api's update queue is consumed with a large prefetch (a replay is not paced by round
trips), and aio-pika runs each delivery as its own task: measured here, about one delivery
in six reaches the handler before the one RabbitMQ sent just ahead of it. The read model does
not care (it folds by log position), but live subscribers do: a build log whose lines
arrive swapped would be shown swapped. :class:`InOrder` puts deliveries back in the order
of their delivery tags (consecutive on one channel) before they are applied.

A delivery that never reaches the handler must not stall the rest: a gap is waited for a
short while (``wait``) or until ``limit`` deliveries are held, then skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

Apply = Callable[[bytes, Mapping[str, Any]], None]


class InOrder:
    """Applies ``(delivery tag, body, headers)`` deliveries in delivery-tag order."""

    def __init__(self, apply: Apply, *, wait: float = 0.2, limit: int = 4096) -> None:
        self.apply = apply
        self.wait = wait
        self.limit = limit
        self._next: int | None = None
        self._held: dict[int, tuple[bytes, Mapping[str, Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.skipped = 0

    def deliver(self, tag: int, body: bytes, headers: Mapping[str, Any]) -> None:
        """Take one delivery: apply it and any it was holding up, or hold it for its turn."""
        if self._next is None or tag == 1:
            # The first delivery, or a new channel after a reconnection (tags start at 1).
            self._flush()
            self._next = tag
        if tag < self._next:
            self.apply(body, headers)  # its turn was skipped: late is better than never
            return
        self._held[tag] = (body, headers)
        self._drain()
        if self._held:
            if len(self._held) >= self.limit:
                self._skip()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.wait, self._skip)

    def _drain(self) -> None:
        assert self._next is not None
        while self._next in self._held:
            body, headers = self._held.pop(self._next)
            self._next += 1
            self.apply(body, headers)
        if not self._held and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _skip(self) -> None:
        # The delivery awaited did not come: go on from the oldest one held.
        self._timer = None
        if not self._held:
            return
        oldest = min(self._held)
        assert self._next is not None
        self.skipped += oldest - self._next
        self._next = oldest
        self._drain()
        if self._held:
            self._timer = asyncio.get_running_loop().call_later(self.wait, self._skip)

    def _flush(self) -> None:
        for tag in sorted(self._held):
            body, headers = self._held.pop(tag)
            self.apply(body, headers)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
