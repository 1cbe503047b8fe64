"""In-process fan-out: one update, computed once, handed to every subscriber of its key.

DESIGN section 8: the api receives each update once (its exclusive queue) and fans it out to
its GraphQL subscribers, instead of running a query per subscriber. Each subscriber has its
own bounded queue, so a slow one never blocks the others: depending on the broadcaster, it
loses its oldest items (status updates: the latest state is what matters) or is
disconnected (log lines: a silent gap would mislead). Everything runs on one event loop.

A subscriber that has caught up can also hand its subscription over to a :class:`Direct`
deliverer (:meth:`Subscription.hand_over`): ``publish`` then gives it each item at once,
synchronously, instead of queueing the item and waking the subscriber's task. That is how
an update reaches thousands of websockets in one loop (``shipwreck_api.direct``); the
deliverer gives the subscription back whenever it cannot take an item, and the item is
queued as usual.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Hashable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Overflow(enum.Enum):
    """What happens to a subscriber whose queue is full when an item arrives."""

    DROP_OLDEST = "drop-oldest"
    DISCONNECT = "disconnect"


class Delivery(enum.Enum):
    """What a :class:`Direct` deliverer did with one item."""

    SENT = "sent"
    SKIPPED = "skipped"
    """Nothing to send for it (already seen, no change); the deliverer keeps the subscription."""
    ENDED = "ended"
    """Sent, and it was the last item of the stream."""
    LEFT = "left"
    """Not taken: the subscription goes back to its queue, with the item in it."""


class Direct(Protocol[T_contra]):
    """Takes a subscription's items as they are published, without its queue."""

    def deliver(self, item: T_contra, shared: dict[Any, Any]) -> Delivery:
        """Deliver ``item`` now. ``shared`` lives for one publish: what the deliverers of
        its subscribers make once for all of them (an encoded frame) goes there."""
        ...


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
        self._direct: Direct[T] | None = None
        self._handed: asyncio.Future[bool] | None = None
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Items queued and not taken yet."""
        return self._queue.qsize()

    async def hand_over(self, direct: Direct[T]) -> bool:
        """Let ``direct`` take the items published from now on, until it ends the stream
        (True) or gives the subscription back (False: the item it did not take, and any
        after it, are queued for :meth:`get`).

        Only a subscriber with nothing pending may hand over: queued items come first.
        """
        if self._ended or self._queue.qsize():
            return False
        self._direct = direct
        self._handed = asyncio.get_running_loop().create_future()
        try:
            return await self._handed
        finally:
            self._direct = None
            self._handed = None

    def _handed_back(self, outcome: Delivery, item: T) -> None:
        # The deliverer ended the stream, or did not take ``item``.
        self._give_back(ended=outcome is Delivery.ENDED)
        if outcome is Delivery.LEFT:
            self._queue.put_nowait(item)  # empty while handed over: there is room

    def _give_back(self, *, ended: bool) -> None:
        self._direct = None
        handed, self._handed = self._handed, None
        if handed is not None and not handed.done():
            handed.set_result(ended)

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
        # A handed-over subscriber waits on its deliverer: back to its queue, to the end.
        self._give_back(ended=False)
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
        shared: dict[Any, Any] = {}
        returned: list[tuple[Subscription[K, T], Delivery]] = []
        # With thousands of subscribers handed over, this loop is the hot path of an update:
        # one call per subscriber, which writes its frame, and nothing else.
        for subscription in tuple(subscribers):
            direct = subscription._direct
            if direct is None:
                subscription.offer(item, self.overflow)
                continue
            try:
                outcome = direct.deliver(item, shared)
            except Exception:
                # One subscriber's failure must not stop the publish for the others: its
                # own task takes the item from its queue and meets the error there.
                log.exception("direct delivery failed; the subscriber reads its queue again")
                outcome = Delivery.LEFT
            if outcome is not Delivery.SENT and outcome is not Delivery.SKIPPED:
                returned.append((subscription, outcome))
        # Subscriptions given back (a stream's last item ends every one of them) wake their
        # tasks: after every frame is written, so that the last subscriber's frame does not
        # wait for the others' wake-ups.
        for subscription, outcome in returned:
            subscription._handed_back(outcome, item)
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
