"""Backbone figures: mapper speed, event-store appends, relay throughput (`just bench`).

Each benchmark prints one line of figures and appends it to .benchmarks/backbone.jsonl;
docs/BENCHMARKS.md records them with the machine and versions. Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from eventsourcing.persistence import JSONTranscoder

from shipwreck_eventstore import MsgspecMapper, OutboxRelay
from shipwreck_messaging import Route, create_broker, events_exchange
from tests.support.infra import AMQP_URL, unique
from tests.support.sample_domain import (
    Colour,
    EntryAnnounced,
    Label,
    Ledger,
    make_writer,
    translate,
)
from tests.support.stores import StoreFactory

RESULTS = Path(__file__).resolve().parents[2] / ".benchmarks" / "backbone.jsonl"


def _report(name: str, **figures: object) -> None:
    record = {"benchmark": name, "python": platform.python_version(), **figures}
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")


def test_mapper_round_trip_rate() -> None:
    mapper = MsgspecMapper(JSONTranscoder())
    ledger = Ledger("bench", uuid.uuid4(), datetime.now(UTC), Colour.RED)
    for i in range(10_000):
        ledger.add_entry(f"k{i}", Label(f"entry {i}", weight=i))
    events = ledger.collect_events()
    started = time.perf_counter()
    stored = [mapper.to_stored_event(e) for e in events]
    encoded = time.perf_counter()
    decoded = [mapper.to_domain_event(s) for s in stored]
    finished = time.perf_counter()
    assert decoded[-1] == events[-1]
    _report(
        "mapper",
        events=len(events),
        encode_per_s=round(len(events) / (encoded - started)),
        decode_per_s=round(len(events) / (finished - encoded)),
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_relay_throughput(backend: str, tmp_path: Path) -> None:
    asyncio.run(_relay_throughput(backend, tmp_path))


async def _relay_throughput(backend: str, tmp_path: Path) -> None:
    from tests.support.stores import drop_postgres_tables

    stores = StoreFactory(backend, tmp_path)
    writer = make_writer(stores.config(), stores.name("bench"))
    count = 5_000
    try:
        started = time.perf_counter()
        for batch in range(count // 100):
            ledger = Ledger(f"b{batch}", uuid.uuid4(), datetime.now(UTC), Colour.RED)
            for i in range(99):
                ledger.add_entry(f"k{i}", Label("x"))
            writer.save(ledger)
        appended = time.perf_counter()

        route = Route(unique("bench.relay"), ("test.entry-announced.v1",))
        broker = create_broker(AMQP_URL, app_id="bench")
        received = 0
        done = asyncio.Event()

        @broker.subscriber(route.declaration(), events_exchange())
        async def on_entry(msg: EntryAnnounced) -> None:
            nonlocal received
            received += 1
            if received == count - count // 100:
                done.set()

        async with broker:
            await broker.start()
            relay = OutboxRelay(writer, broker, translate, batch_size=500)
            relay_started = time.perf_counter()
            while await relay.run_once():
                pass
            published = time.perf_counter()
            await asyncio.wait_for(done.wait(), 120)
            consumed = time.perf_counter()
        connection = await aio_pika.connect_robust(AMQP_URL)
        channel = await connection.channel()
        await channel.queue_delete(route.queue)
        await connection.close()
        _report(
            "relay",
            backend=backend,
            events=count,
            append_per_s=round(count / (appended - started)),
            publish_confirmed_per_s=round(count / (published - relay_started)),
            end_to_end_per_s=round(received / (consumed - relay_started)),
        )
    finally:
        writer.close()
        if backend == "postgres":
            drop_postgres_tables(*stores.used_names)
