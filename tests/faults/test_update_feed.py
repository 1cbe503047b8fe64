"""The api's update queue across a RabbitMQ restart, on the suite's own broker."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from shipwreck_api.app import UpdateFeed
from shipwreck_api.live import LIVE_TAGS
from shipwreck_messaging import EXCHANGE
from tests.support.private_infra import PrivateRabbit

pytestmark = [pytest.mark.anyio, pytest.mark.faults]


async def _publish(url: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(aio_pika.Message(body), routing_key=LIVE_TAGS[0])
    finally:
        await connection.close()


async def test_the_update_queue_is_back_after_a_broker_restart_with_garbage_collected_meanwhile(
    rabbit: PrivateRabbit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aio-pika's robust connection holds its channels only weakly. While the broker was
    down, nothing else held the feed's channel, so a garbage collection then (a busy
    process has one within seconds) left the feed reconnected without its queue, bindings
    and consumer: the api stopped hearing the platform (seen in the fault suite)."""
    # pytest keeps every log record, and with it the traceback of the connection's error,
    # whose frames hold the channel: a service keeps no record, so neither may the test.
    for name in ("aio_pika", "aiormq"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", False)
    await _publish(rabbit.url, b"before")  # declares the exchange; no queue takes it yet
    received: asyncio.Queue[bytes] = asyncio.Queue()
    reconnected = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        received.put_nowait(message.body)

    feed = UpdateFeed(
        rabbit.url, f"api.updates.{uuid.uuid4().hex[:12]}", on_message, on_reconnect=reconnected.set
    )
    await feed.start()
    try:
        restart = asyncio.ensure_future(asyncio.to_thread(rabbit.restart, 3))
        while not restart.done():
            gc.collect()
            await asyncio.sleep(0.05)
        await restart
        await asyncio.wait_for(reconnected.wait(), 60)
        await _publish(rabbit.url, b"after")
        assert await asyncio.wait_for(received.get(), 10) == b"after"
    finally:
        await feed.stop()
