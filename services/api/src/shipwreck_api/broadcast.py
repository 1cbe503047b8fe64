"""In-process fan-out: one update, computed once, handed to every subscriber of its key.

DESIGN section 8: the api receives each update once (its exclusive queue) and fans it out to
its GraphQL subscribers, instead of running a query per subscriber. Each subscriber has its
own bounded queue, so a slow one never blocks the others: depending on the broadcaster, it
loses its oldest items (status updates: the latest state is what matters) or is
disconnected (log lines: a silent gap would mislead). Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Overflow(enum.Enum):
    """What happens to a subscriber whose queue is full when an item arrives."""

    DROP_OLDEST = "drop-oldest"
    DISCONNECT = "disconnect"


class SubscriberTooSlow(RuntimeError):
    """A subscriber fell ``maxsize`` items behind and was disconnected."""


class Ended(Exception):
    """The subscription has ended: no item will follow."""


class _End:
    """Queued after the last item of a subscription."""


_END = _End()


class Subscription(Generic[K, T]):
    """One subscriber's bounded queue; iterate it, and close it (or use ``with``) when done."""

    def __init__(self, owner: Broadcaster[K, T], key: K, maxsize: int) -> None:
        self._owner = owner
        self.key = key
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue(maxsize)
        self._error: BaseException | None = None
        self._ended = False
        self.dropped = 0

    def offer(self, item: T, overflow: Overflow) -> None:
        """Queue ``item`` without waiting, applying the overflow policy when full."""
        if self._ended:
            return
        if self._queue.full():
            if overflow is Overflow.DISCONNECT:
                self.fail(
                    SubscriberTooSlow(
                        f"subscriber fell {self._queue.maxsize} items behind and was "
                        "disconnected; subscribe again to resume"
                    )
                )
                return
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def fail(self, error: BaseException) -> None:
        """End the subscription at once: the next ``get`` raises ``error``."""
        self._error = error
        self._end(discard_pending=True)

    def finish(self) -> None:
        """End the subscription after the items already queued."""
        self._end(discard_pending=False)

    def _end(self, *, discard_pending: bool) -> None:
        if self._ended:
            return
        self._ended = True
        while self._queue.qsize() > (0 if discard_pending else self._queue.maxsize - 1):
            self._queue.get_nowait()  # make room for the end marker, oldest first
            self.dropped += 0 if discard_pending else 1
        self._queue.put_nowait(_END)

    async def get(self) -> T:
        """The next item; raises :class:`Ended` at the end (or the failure's error)."""
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # stay ended for any later call
            if self._error is not None:
                raise self._error
            # Not StopAsyncIteration: raised through an async generator it would become a
            # RuntimeError (PEP 479).
            raise Ended
        return item

    def __aiter__(self) -> Subscription[K, T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except Ended:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving items (idempotent)."""
        self._owner._remove(self)

    def __enter__(self) -> Subscription[K, T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Broadcaster(Generic[K, T]):
    """Subscribers by key; ``publish`` hands an item to every subscriber of its key."""

    def __init__(self, *, maxsize: int = 100, overflow: Overflow = Overflow.DROP_OLDEST) -> None:
        if maxsize < 1:
            raise ValueError("a subscriber queue holds at least one item")
        self.maxsize = maxsize
        self.overflow = overflow
        self._subscribers: dict[K, set[Subscription[K, T]]] = {}

    def subscribe(self, key: K) -> Subscription[K, T]:
        """A new subscription to ``key``; it receives items published from now on."""
        subscription = Subscription(self, key, self.maxsize)
        self._subscribers.setdefault(key, set()).add(subscription)
        return subscription

    def publish(self, key: K, item: T) -> int:
        """Offer ``item`` to every subscriber of ``key``; returns how many there were."""
        subscribers = self._subscribers.get(key, ())
        for subscription in tuple(subscribers):
            subscription.offer(item, self.overflow)
        return len(subscribers)

    def keys(self) -> list[K]:
        """The keys that have subscribers."""
        return list(self._subscribers)

    def subscriber_count(self, key: K | None = None) -> int:
        """Subscribers of ``key``, or of every key."""
        if key is not None:
            return len(self._subscribers.get(key, ()))
        return sum(len(s) for s in self._subscribers.values())

    def _remove(self, subscription: Subscription[K, T]) -> None:
        subscribers = self._subscribers.get(subscription.key)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscribers[subscription.key]
