"""Playing the orchestrator's side of an api's replays, for tests and benchmarks that run an
api without an orchestrator.

An api answers no question about apps or deployments until the orchestrator's replay has
finished (it would answer an app that exists as unknown). Its requests wait in the
orchestrator's command queue, which the api declares at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika

from shipwreck_contracts import ReplayFinished, ReplayRequested, decode_message, encode

ORCHESTRATOR_COMMANDS = "orchestrator.commands"


async def replay_requests(channel: aio_pika.abc.AbstractChannel) -> AsyncIterator[ReplayRequested]:
    """Every replay request to the orchestrator, as it arrives (the api also asks the
    watcher for its ledger: those, and the other commands, are skipped).

    Reads the queue the api declares when it starts: start the api first.
    """
    queue = await channel.get_queue(ORCHESTRATOR_COMMANDS)
    while True:
        incoming = await queue.get(no_ack=True, fail=False)
        if incoming is None:
            await asyncio.sleep(0.05)
            continue
        request = decode_message(incoming.body)
        if isinstance(request, ReplayRequested) and request.origin == "orchestrator":
            yield request


async def answer_as_an_empty_log(
    channel: aio_pika.abc.AbstractChannel, request: ReplayRequested
) -> None:
    """Answer a replay request as an orchestrator whose log is empty: ReplayFinished at 0."""
    finished = ReplayFinished(origin="orchestrator", last_position=0, at=datetime.now(UTC))
    await channel.default_exchange.publish(
        aio_pika.Message(encode(finished), content_type="application/json"),
        routing_key=request.reply_to,
    )


async def answer_the_first_replay(channel: aio_pika.abc.AbstractChannel) -> None:
    """Answer the first replay request to the orchestrator as one with an empty log does,
    then return. Later requests (a rebuild's) are left to the caller. ``channel`` stays the
    caller's to close."""
    async for request in replay_requests(channel):
        await answer_as_an_empty_log(channel, request)
        return
