"""Outbox relay on real RabbitMQ, with the writer and consumer on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import anyio
import pytest
from faststream import Context
from faststream.rabbit import RabbitBroker

from shipwreck_eventstore import OutboxRelay, ShipwreckApplication, process_once
from shipwreck_eventstore.relay import tracking_from_headers
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER, Route, create_broker
from shipwreck_messaging.broker import declare_route
from shipwreck_messaging.topology import events_exchange
from tests.support.infra import AMQP_URL, unique
from tests.support.sample_domain import (
    Colour,
    EntryAnnounced,
    Label,
    Ledger,
    Tally,
    make_writer,
    translate,
)
from tests.support.stores import StoreFactory

pytestmark = [pytest.mark.anyio, pytest.mark.infra]


def _write_entries(app: ShipwreckApplication, keys: list[str], name: str = "relay") -> Ledger:
    ledger = Ledger(name, uuid.uuid4(), datetime.now(UTC), Colour.RED)
    for key in keys:
        ledger.add_entry(key, Label(key))
    app.save(ledger)
    return ledger


class Counter:
    """A consumer that counts each announced entry exactly once, by Tracking."""

    def __init__(self, app: ShipwreckApplication) -> None:
        self.app = app
        self.deliveries = 0
        self.handled = asyncio.Event()

    def handle(self, msg: EntryAnnounced, headers: dict[str, Any]) -> None:
        tracking = tracking_from_headers(headers)
        assert tracking is not None, "relayed messages carry their origin and position"

        def decide() -> list[Tally]:
            tally_id = Tally.create_id(msg.ledger_id)
            tally = (
                self.app.repository.get(tally_id)
                if tally_id in self.app.repository
                else Tally(msg.ledger_id)
            )
            tally.count(msg.key)
            return [tally]

        process_once(self.app, tracking, decide)

    def keys(self, ledger_id: uuid.UUID) -> list[str]:
        tally: Tally = self.app.repository.get(Tally.create_id(ledger_id))
        return tally.keys


def _subscribe(broker: RabbitBroker, route: Route, counter: Counter, expected: int) -> None:
    @broker.subscriber(route.declaration(), events_exchange())
    async def on_entry(
        msg: EntryAnnounced, headers: dict[str, Any] = Context("message.headers")
    ) -> None:
        await anyio.to_thread.run_sync(counter.handle, msg, headers)
        counter.deliveries += 1
        if counter.deliveries >= expected:
            counter.handled.set()


def _listen(broker: RabbitBroker, route: Route) -> asyncio.Queue[EntryAnnounced]:
    """The entries announced on ``route``'s queue, as they arrive."""
    got: asyncio.Queue[EntryAnnounced] = asyncio.Queue()

    @broker.subscriber(route.declaration(), events_exchange())
    async def on_entry(msg: EntryAnnounced) -> None:
        await got.put(msg)

    return got


async def _delete_queue(name: str) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    await channel.queue_delete(name)
    await connection.close()


async def test_relay_publishes_each_integration_event_with_its_position(
    stores: StoreFactory,
) -> None:
    writer = make_writer(stores.config(), stores.name("w"))
    keys = [f"k{i:02d}" for i in range(60)]
    _write_entries(writer, keys)
    route = Route(unique("test.relay"), ("test.entry-announced.v1",))
    broker = create_broker(AMQP_URL, app_id="test")
    seen: list[tuple[str, dict[str, Any]]] = []
    done = asyncio.Event()

    @broker.subscriber(route.declaration(), events_exchange())
    async def on_entry(
        msg: EntryAnnounced, headers: dict[str, Any] = Context("message.headers")
    ) -> None:
        seen.append((msg.key, headers))
        if len(seen) == len(keys):
            done.set()

    async with broker:
        await broker.start()
        relay = OutboxRelay(writer, broker, translate)
        assert await relay.run_once() == 61  # Opened + the entries, in one batch
        await asyncio.wait_for(done.wait(), 10)
        assert await relay.run_once() == 0
    await _delete_queue(route.queue)

    # Published concurrently, confirmed together, yet delivered in log order.
    assert [key for key, _ in seen] == keys
    assert {h[ORIGIN_HEADER] for _, h in seen} == {writer.name}
    assert [h[POSITION_HEADER] for _, h in seen] == list(range(2, 62))
    assert await relay.position() == 61
    writer.close()


async def test_relay_killed_before_recording_republishes_and_effects_stay_exactly_once(
    stores: StoreFactory,
) -> None:
    writer = make_writer(stores.config(), stores.name("w"))
    consumer_app = make_writer(stores.config(), stores.name("c"))
    ledger = _write_entries(writer, ["a", "b", "c"])
    route = Route(unique("test.relay"), ("test.entry-announced.v1",))
    counter = Counter(consumer_app)
    broker = create_broker(AMQP_URL, app_id="test")
    _subscribe(broker, route, counter, expected=6)

    async with broker:
        await broker.connect()
        await declare_route(broker, route)
        # First relay life: publishes the batch, then dies before recording its position.
        crashed = OutboxRelay(writer, broker, translate)
        assert await crashed.publish_batch() == 4
        assert await crashed.position() == 0
        # Restarted relay: starts from the recorded position, so it publishes all again.
        restarted = OutboxRelay(writer, broker, translate)
        assert await restarted.run_once() == 4
        await broker.start()
        await asyncio.wait_for(counter.handled.wait(), 15)
    await _delete_queue(route.queue)

    assert counter.deliveries == 6  # every message arrived twice
    assert counter.keys(ledger.id) == ["a", "b", "c"]  # and counted once
    writer.close()
    consumer_app.close()


async def test_relay_wakes_up_on_save_without_waiting_for_the_poll(
    stores: StoreFactory,
) -> None:
    writer = make_writer(stores.config(), stores.name("w"))
    route = Route(unique("test.relay"), ("test.entry-announced.v1",))
    broker = create_broker(AMQP_URL, app_id="test")
    got = _listen(broker, route)

    async with broker:
        await broker.start()
        # A poll interval far longer than the wait below: only the save can wake it.
        relay = OutboxRelay(writer, broker, translate, idle_poll_seconds=60)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.3)
        await anyio.to_thread.run_sync(_write_entries, writer, ["late"])
        msg = await asyncio.wait_for(got.get(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _delete_queue(route.queue)
    assert msg.key == "late"
    writer.close()


async def test_relay_running_publishes_concurrent_saves_once_in_log_order_past_a_gap(
    stores: StoreFactory,
) -> None:
    from eventsourcing.persistence import IntegrityError

    writer = make_writer(stores.config(), stores.name("w"))
    route = Route(unique("test.relay"), ("test.entry-announced.v1",))
    broker = create_broker(AMQP_URL, app_id="test")
    got: list[tuple[str, int]] = []
    keys = [f"t{t}-{i}" for t in range(4) for i in range(10)] + ["after-gap"]
    done = asyncio.Event()

    @broker.subscriber(route.declaration(), events_exchange())
    async def on_entry(
        msg: EntryAnnounced, headers: dict[str, Any] = Context("message.headers")
    ) -> None:
        got.append((msg.key, headers[POSITION_HEADER]))
        if len(got) >= len(keys):
            done.set()

    def save_entries(thread: int) -> None:
        for i in range(10):
            _write_entries(writer, [f"t{thread}-{i}"], name=f"t{thread}-{i}")

    def lose_a_conflict_then_save() -> None:
        # A rolled-back insert uses up notification ids (on PostgreSQL): a gap in the log.
        ledger = _write_entries(writer, [], name="contested")
        stale = writer.repository.get(ledger.id)
        fresh = writer.repository.get(ledger.id)
        fresh.rename("won", "test")
        writer.save(fresh)
        stale.rename("lost", "test")
        with pytest.raises(IntegrityError):
            writer.save(stale)
        _write_entries(writer, ["after-gap"], name="after-gap")

    async with broker:
        await broker.start()
        # Only saves can wake it within the test's wait: the poll interval is far longer.
        relay = OutboxRelay(writer, broker, translate, idle_poll_seconds=60)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.3)
        async with anyio.create_task_group() as savers:
            for thread in range(4):
                savers.start_soon(anyio.to_thread.run_sync, save_entries, thread)
        await anyio.to_thread.run_sync(lose_a_conflict_then_save)
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _delete_queue(route.queue)

    # Each message once, in log order; the position is recorded when the relay stops.
    assert sorted(key for key, _ in got) == sorted(keys)
    positions = [position for _, position in got]
    assert positions == sorted(set(positions))
    last = writer.process_recorder.max_notification_id()
    assert await OutboxRelay(writer, broker, translate).position() == last
    writer.close()


async def test_replay_sends_the_published_log_to_one_queue_then_says_it_finished(
    stores: StoreFactory,
) -> None:
    from faststream.rabbit import RabbitQueue

    from shipwreck_contracts import ReplayFinished

    writer = make_writer(stores.config(), stores.name("w"))
    _write_entries(writer, ["a", "b", "c"])
    _write_entries(writer, ["not-yet-published"], name="later")
    reply_to = unique("test.replay")
    broker = create_broker(AMQP_URL, app_id="test")
    got: list[tuple[str, int]] = []
    finished: asyncio.Queue[ReplayFinished] = asyncio.Queue()
    inbox = broker.subscriber(RabbitQueue(reply_to, exclusive=True, auto_delete=True))

    @inbox(filter=lambda m: m.raw_message.type == "test.entry-announced.v1")
    async def on_entry(
        msg: EntryAnnounced, headers: dict[str, Any] = Context("message.headers")
    ) -> None:
        got.append((msg.key, headers[POSITION_HEADER]))

    @inbox(filter=lambda m: m.raw_message.type == "projection.replay-finished.v1")
    async def on_finished(msg: ReplayFinished) -> None:
        await finished.put(msg)

    async with broker:
        await broker.start()
        relay = OutboxRelay(writer, broker, translate, batch_size=2)
        await relay.publish_batch()  # positions 1-2 published ...
        await relay.record_position(4)  # ... and, as far as the relay knows, up to 4
        last = await relay.replay(reply_to, after_position=2)
        done = await asyncio.wait_for(finished.get(), 10)
    # Only what the live relay already published (up to 4), after the reader's position (2),
    # in order, with the positions the live messages carry.
    assert got == [("b", 3), ("c", 4)]
    assert (last, done.last_position, done.origin) == (4, 4, writer.name)
    writer.close()


async def test_relay_records_its_position_once_per_interval_and_when_it_stops(
    stores: StoreFactory,
) -> None:
    writer = make_writer(stores.config(), stores.name("w"))
    route = Route(unique("test.relay"), ("test.entry-announced.v1",))
    broker = create_broker(AMQP_URL, app_id="test")
    got = _listen(broker, route)

    def recorded() -> int:
        return writer.process_recorder.max_tracking_id(relay.position_name) or 0

    async with broker:
        await broker.start()
        # Batches of one message each, well within one interval: none is recorded yet.
        relay = OutboxRelay(writer, broker, translate, record_every_seconds=60)
        task = asyncio.create_task(relay.run())
        for i in range(5):
            await anyio.to_thread.run_sync(_write_entries, writer, [f"k{i}"], f"l{i}")
            await asyncio.wait_for(got.get(), 5)
        last = writer.process_recorder.max_notification_id()
        # Published, as far as replays are concerned, once the broker has confirmed the
        # batch (the consumer may have its message before the relay has the confirm).
        for _ in range(100):
            if await relay.position() == last:
                break
            await asyncio.sleep(0.05)
        assert await relay.position() == last
        assert await anyio.to_thread.run_sync(recorded) == 0
        # Stopping records the newest position at once.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await anyio.to_thread.run_sync(recorded) == last

        # Running on, it records within its interval, without stopping.
        relay = OutboxRelay(writer, broker, translate, record_every_seconds=0.2)
        task = asyncio.create_task(relay.run())
        await anyio.to_thread.run_sync(_write_entries, writer, ["more"], "more")
        await asyncio.wait_for(got.get(), 5)
        newest = writer.process_recorder.max_notification_id()
        for _ in range(100):
            if await anyio.to_thread.run_sync(recorded) == newest:
                break
            await asyncio.sleep(0.05)
        assert await anyio.to_thread.run_sync(recorded) == newest
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _delete_queue(route.queue)
    writer.close()
