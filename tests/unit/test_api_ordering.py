"""Deliveries handled as concurrent tasks are applied in the queue's order."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from shipwreck_api.ordering import InOrder

pytestmark = pytest.mark.anyio


def _in_order(**options: Any) -> tuple[InOrder, list[bytes]]:
    applied: list[bytes] = []

    def apply(body: bytes, headers: Mapping[str, Any]) -> None:
        applied.append(body)

    return InOrder(apply, **options), applied


async def test_deliveries_are_applied_in_delivery_tag_order() -> None:
    in_order, applied = _in_order()
    for tag in (1, 3, 2, 5, 4, 6):
        in_order.deliver(tag, str(tag).encode(), {})
    assert applied == [b"1", b"2", b"3", b"4", b"5", b"6"]


async def test_a_delivery_that_never_comes_is_skipped_after_a_while() -> None:
    in_order, applied = _in_order(wait=0.02)
    in_order.deliver(1, b"1", {})
    in_order.deliver(3, b"3", {})
    in_order.deliver(4, b"4", {})
    assert applied == [b"1"]
    await asyncio.sleep(0.05)
    assert applied == [b"1", b"3", b"4"]
    assert in_order.skipped == 1
    in_order.deliver(2, b"2", {})  # late after all: applied rather than lost
    assert applied[-1] == b"2"


async def test_too_many_held_deliveries_skip_the_gap_at_once() -> None:
    in_order, applied = _in_order(wait=10, limit=3)
    in_order.deliver(1, b"1", {})
    for tag in (3, 4, 5):
        in_order.deliver(tag, str(tag).encode(), {})
    assert applied == [b"1", b"3", b"4", b"5"]


async def test_a_new_channel_starts_again_at_tag_one() -> None:
    in_order, applied = _in_order(wait=10)
    for tag in (7, 8, 10):
        in_order.deliver(tag, str(tag).encode(), {})
    in_order.deliver(1, b"new-1", {})  # reconnected: what was held goes first
    in_order.deliver(2, b"new-2", {})
    assert applied == [b"7", b"8", b"10", b"new-1", b"new-2"]
