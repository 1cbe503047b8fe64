"""Fan-out: every subscriber gets each item once; a slow one never blocks the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipwreck_api.broadcast import (
    Broadcaster,
    Delivery,
    Ended,
    Overflow,
    SubscriberTooSlow,
    Subscription,
)

pytestmark = pytest.mark.anyio


async def test_every_subscriber_of_a_key_gets_each_item() -> None:
    hub: Broadcaster[str, int] = Broadcaster()
    a, b, other = hub.subscribe("k"), hub.subscribe("k"), hub.subscribe("other")
    assert hub.publish("k", 1) == 2
    hub.publish("k", 2)
    assert [await a.get(), await a.get()] == [1, 2]
    assert [await b.get(), await b.get()] == [1, 2]
    assert other._queue.empty()


async def test_a_slow_subscriber_loses_its_oldest_items_and_blocks_no_one() -> None:
    hub: Broadcaster[str, int] = Broadcaster(maxsize=2)
    slow, fast = hub.subscribe("k"), hub.subscribe("k")
    received = []
    for n in range(5):
        hub.publish("k", n)  # never waits, whatever the subscribers do
        received.append(await asyncio.wait_for(fast.get(), 1))
    assert received == [0, 1, 2, 3, 4]
    assert [await slow.get(), await slow.get()] == [3, 4]
    assert slow.dropped == 3


async def test_with_disconnect_a_slow_subscriber_is_ended_with_an_error() -> None:
    hub: Broadcaster[str, int] = Broadcaster(maxsize=2, overflow=Overflow.DISCONNECT)
    slow, fast = hub.subscribe("k"), hub.subscribe("k")
    for n in range(3):
        hub.publish("k", n)
        await fast.get()
    with pytest.raises(SubscriberTooSlow, match="fell 2 items behind"):
        await slow.get()
    hub.publish("k", 9)
    assert await fast.get() == 9


async def test_finish_ends_after_what_is_queued() -> None:
    hub: Broadcaster[str, int] = Broadcaster()
    sub = hub.subscribe("k")
    hub.publish("k", 1)
    sub.finish()
    hub.publish("k", 2)  # after the end: not delivered
    assert [n async for n in sub] == [1]
    with pytest.raises(Ended):
        await sub.get()


async def test_closing_unsubscribes() -> None:
    hub: Broadcaster[str, int] = Broadcaster()
    with hub.subscribe("k"):
        assert hub.subscriber_count("k") == 1
    assert hub.subscriber_count() == 0
    assert hub.publish("k", 1) == 0


async def test_subscriptions_given_back_are_woken_only_after_every_delivery() -> None:
    """A stream's last item ends every handed-over subscription: every subscriber's frame
    is written before any of them is given back (and its task woken)."""
    hub: Broadcaster[str, int] = Broadcaster()
    subscriptions = [hub.subscribe("k") for _ in range(3)]
    seen: list[list[bool]] = []

    class Ending:
        def deliver(self, item: int, shared: dict[Any, Any]) -> Delivery:
            # Whether each subscription was already given back when this one is written.
            seen.append([s._direct is None for s in subscriptions])
            return Delivery.ENDED if item == 2 else Delivery.SENT

    async def hand_over(s: Subscription[str, int]) -> bool:
        return await s.hand_over(Ending())

    waiting = [asyncio.create_task(hand_over(s)) for s in subscriptions]
    await asyncio.sleep(0)
    hub.publish("k", 1)
    hub.publish("k", 2)
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert seen == [[False, False, False]] * 6
