"""A replay asked for while the relay's batch is on its way includes that batch.

The reader declares its queue and then asks for a replay. A live message routed just
before the queue existed never reaches it; if the replay stopped at the position
published before that batch's confirm, the reader would miss it for good.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shipwreck_eventstore import OutboxRelay, StoreConfig
from shipwreck_messaging import POSITION_HEADER
from tests.support.sample_domain import Colour, Label, Ledger, make_writer, translate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowBroker:
    """Holds every live publish until released; replays go through at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.live_started = asyncio.Event()
        self.replayed: list[tuple[str, int]] = []

    async def publish(self, message: Any, **kwargs: Any) -> None:
        if "queue" in kwargs:  # a replay, straight to the reader's queue
            position = (kwargs.get("headers") or {}).get(POSITION_HEADER, 0)
            self.replayed.append((type(message).__name__, int(position)))
            return
        self.live_started.set()
        await self.release.wait()


async def test_a_replay_during_a_publish_waits_for_it_and_includes_its_events(
    tmp_path: Path,
) -> None:
    writer = make_writer(StoreConfig(state_dir=str(tmp_path)), "window")
    broker = SlowBroker()
    relay = OutboxRelay(writer, broker, translate)  # type: ignore[arg-type]
    ledger = Ledger("l", uuid.uuid4(), datetime.now(UTC), Colour.RED)
    ledger.add_entry("a", Label("a"))
    writer.save(ledger)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(broker.live_started.wait(), 5)  # the batch is on its way
        replay = asyncio.create_task(relay.replay("reader.queue"))
        await asyncio.sleep(0.05)
        assert not replay.done()  # it waits for the confirm ...
        broker.release.set()
        last = await asyncio.wait_for(replay, 5)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        writer.close()
    # ... and then includes the batch that was in flight.
    entries = [p for kind, p in broker.replayed if kind == "EntryAnnounced"]
    assert entries
    assert last == max(entries)
    assert broker.replayed[-1][0] == "ReplayFinished"
