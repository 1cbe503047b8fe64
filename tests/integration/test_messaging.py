"""The messaging backbone on a real RabbitMQ: confirms, dead-lettering, durability."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from shipwreck_contracts import DeploymentInitialized, Trigger
from shipwreck_contracts.base import Message, decode, tag_of
from shipwreck_eventstore.relay import outgoing
from shipwreck_messaging import (
    PublishFailed,
    Route,
    create_broker,
    declare_route,
    declare_topology,
    publish,
    quorum_queue,
)
from shipwreck_messaging.routes import TOPOLOGY, WATCHER_APPS
from shipwreck_messaging.topology import events_exchange
from shipwreck_orchestrator.domain import Deployment
from shipwreck_orchestrator.translate import translate
from tests.support.infra import AMQP_URL, unique
from tests.support.platform import Platform

pytestmark = [pytest.mark.anyio, pytest.mark.infra]


class Pinged(Message, tag="test.pinged.v1", frozen=True, kw_only=True):
    ping_id: uuid.UUID
    at: datetime
    poison: bool = False


def _ping(poison: bool = False) -> Pinged:
    return Pinged(ping_id=uuid.uuid4(), at=datetime.now(UTC), poison=poison)


@pytest.fixture
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()


async def _drain(
    connection: aio_pika.abc.AbstractRobustConnection, queue: str, wait_seconds: float = 10.0
) -> list[bytes]:
    """Everything currently in ``queue`` (waits until at least one message or timeout)."""
    channel = await connection.channel()
    q = await channel.declare_queue(queue, passive=True)
    bodies: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        message = await q.get(fail=False)
        if message is not None:
            bodies.append(message.body)
            await message.ack()
            continue
        if bodies or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    await channel.close()
    return bodies


async def _delete_queues(connection: aio_pika.abc.AbstractRobustConnection, *names: str) -> None:
    channel = await connection.channel()
    for name in names:
        await channel.queue_delete(name)
    await channel.close()


async def test_published_message_reaches_its_typed_handler() -> None:
    route = Route(unique("test.q"), ("test.pinged.v1",))
    broker = create_broker(AMQP_URL, app_id="test")
    received: asyncio.Queue[Pinged] = asyncio.Queue()

    @broker.subscriber(route.declaration(), events_exchange())
    async def handle(msg: Pinged) -> None:
        await received.put(msg)

    sent = _ping()
    async with broker:
        await broker.start()
        await publish(broker, sent, mandatory=True)
        got = await asyncio.wait_for(received.get(), 10)
        channel = await aio_pika.connect_robust(AMQP_URL)
        await _delete_queues(channel, route.queue)
        await channel.close()
    assert got == sent


async def test_poison_message_is_dead_lettered_after_the_delivery_limit(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    dlx, dlq = unique("test.dlx"), unique("test.dlq")
    queue = quorum_queue(
        unique("test.q"), routing_key="test.pinged.v1", delivery_limit=3, dead_letter_to=dlx
    )
    broker = create_broker(AMQP_URL, app_id="test")
    attempts: list[uuid.UUID] = []

    @broker.subscriber(queue, events_exchange())
    async def handle(msg: Pinged) -> None:
        attempts.append(msg.ping_id)
        if msg.poison:
            raise RuntimeError("this message can never be handled")

    poison = _ping(poison=True)
    async with broker:
        dead_exchange = await broker.declare_exchange(
            RabbitExchange(dlx, type=ExchangeType.FANOUT, durable=True)
        )
        dead_queue = await broker.declare_queue(RabbitQueue(dlq, durable=True))
        await dead_queue.bind(dead_exchange, routing_key="")
        await broker.start()
        await publish(broker, poison, mandatory=True)
        dead = await _drain(amqp, dlq)
    channel = await amqp.channel()
    await channel.exchange_delete(dlx)
    await channel.close()
    await _delete_queues(amqp, queue.name, dlq)

    assert len(dead) == 1
    assert Pinged.__struct_config__.tag in dead[0].decode()
    assert str(poison.ping_id) in dead[0].decode()
    # The first delivery plus redeliveries up to the limit, and then no more.
    assert attempts.count(poison.ping_id) == 4


async def test_message_published_while_consumer_is_down_is_delivered_when_it_returns(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    route = Route(unique("test.q"), ("test.pinged.v1",))
    publisher = create_broker(AMQP_URL, app_id="test-publisher")
    sent = _ping()
    async with publisher:
        await publisher.connect()
        # Services declare the whole topology at start-up: the queue exists before its
        # consumer has ever run.
        await declare_route(publisher, route)
        await publish(publisher, sent, mandatory=True)

    consumer = create_broker(AMQP_URL, app_id="test-consumer")
    received: asyncio.Queue[Pinged] = asyncio.Queue()

    @consumer.subscriber(route.declaration(), events_exchange())
    async def handle(msg: Pinged) -> None:
        await received.put(msg)

    async with consumer:
        await consumer.start()
        got = await asyncio.wait_for(received.get(), 10)
    await _delete_queues(amqp, route.queue)
    assert got == sent


async def test_mandatory_publish_without_a_queue_fails_loudly() -> None:
    broker: RabbitBroker = create_broker(AMQP_URL, app_id="test")
    async with broker:
        await broker.connect()
        with pytest.raises(PublishFailed, match=r"test\.pinged\.v1"):
            await publish(
                broker, _ping(), routing_key=f"test.nobody.{uuid.uuid4().hex}", mandatory=True
            )


async def test_a_retired_binding_is_unbound_when_its_route_is_declared(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    old_key, new_key = unique("test.old"), unique("test.new")
    queue = unique("test.q")
    broker = create_broker(AMQP_URL, app_id="test")
    async with broker:
        await broker.connect()
        # An earlier version bound the old key; this one takes the new key instead.
        await declare_route(broker, Route(queue, (old_key,)))
        await declare_route(broker, Route(queue, (new_key,), retired=(old_key,)))
        await declare_route(broker, Route(queue, (new_key,), retired=(old_key,)))  # idempotent
        with pytest.raises(PublishFailed, match=old_key):
            await publish(broker, _ping(), routing_key=old_key, mandatory=True)
        sent = _ping()
        await publish(broker, sent, routing_key=new_key, mandatory=True)
    bodies = await _drain(amqp, queue)
    await _delete_queues(amqp, queue)
    assert len(bodies) == 1
    assert str(sent.ping_id) in bodies[0].decode()


async def test_only_a_rollbacks_deployment_initialized_reaches_the_watcher(
    platform: Platform,
) -> None:
    """The watcher's queue, bound as an earlier version left it, takes the rollbacks'
    copies and no longer every deployment's; a reader bound to the tag takes each once."""
    at = datetime.now(UTC)
    initialized = []
    for trigger in (Trigger.MANUAL, Trigger.WATCH, Trigger.ROLLBACK):
        deployment = Deployment(
            deployment_id=uuid.uuid4(),
            repo_url="https://git.example.org/acme/hello.git",
            branch="main",
            watch=True,
            trigger=trigger,
            actor="test",
            app="hello",
            commit="1" * 40,
            requested_at=at,
        )
        deployment.accept("hello", at, "2" * 40 if trigger is Trigger.ROLLBACK else None)
        events = deployment.collect_events()
        initialized += [e for e in events if type(e).__qualname__ == "Deployment.Initialized"]
    reader = unique("test.reader")
    connection = await aio_pika.connect_robust(platform.amqp_url)
    broker = create_broker(platform.amqp_url, app_id="test")
    async with broker:
        await broker.connect()
        exchange = await broker.declare_exchange(events_exchange())
        older = Route(WATCHER_APPS.queue, (tag_of(DeploymentInitialized),))
        watcher_queue = await broker.declare_queue(older.declaration())
        await watcher_queue.bind(exchange, routing_key=tag_of(DeploymentInitialized))
        await declare_route(broker, Route(reader, (tag_of(DeploymentInitialized),)))
        await declare_topology(broker, TOPOLOGY)  # what every service does at start
        for event in initialized:
            for routed in outgoing(translate(event)):
                await publish(broker, routed.message, routing_key=routed.routing_key)
    to_watcher = [
        decode(b, DeploymentInitialized) for b in await _drain(connection, WATCHER_APPS.queue)
    ]
    to_reader = [decode(b, DeploymentInitialized) for b in await _drain(connection, reader)]
    await connection.close()
    assert [(m.trigger, m.rolled_back_from) for m in to_watcher] == [(Trigger.ROLLBACK, "2" * 40)]
    assert sorted(m.trigger for m in to_reader) == sorted(
        [Trigger.MANUAL, Trigger.WATCH, Trigger.ROLLBACK]
    )
