"""Playing the orchestrator's side of an api's replays, for tests and benchmarks that run an
api without an orchestrator.

An api answers no question about apps or deployments until the orchestrator's replay has
finished (it would answer an app that exists as unknown). Its requests wait in the
orchestrator's command queue, which the api declares at start-up.

Everything here stops when its ``stop`` event is set, never by cancellation: a task
cancelled in the middle of an AMQP call (a basic.get here) closes its channel, and now and
then ends with ChannelInvalidStateError instead of CancelledError, or never ends (aiormq
7.2; seen in 5 of 300 cancellations). The never-ending kind hung a CI run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aio_pika

from shipwreck_contracts import ReplayFinished, ReplayRequested, decode_message, encode

ORCHESTRATOR_COMMANDS = "orchestrator.commands"
POLL_SECONDS = 0.05


async def replay_requests(
    channel: aio_pika.abc.AbstractChannel, stop: asyncio.Event
) -> AsyncIterator[ReplayRequested]:
    """Every replay request to the orchestrator, as it arrives, until ``stop`` is set (the
    api also asks the watcher for its ledger: those, and the other commands, are skipped).

    Reads the queue the api declares when it starts: start the api first.
    """
    queue = await channel.get_queue(ORCHESTRATOR_COMMANDS)
    while not stop.is_set():
        incoming = await queue.get(no_ack=True, fail=False)
        if incoming is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
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


async def answer_the_first_replay(
    channel: aio_pika.abc.AbstractChannel, stop: asyncio.Event
) -> None:
    """Answer the first replay request to the orchestrator as one with an empty log does,
    then return (or return when ``stop`` is set). Later requests (a rebuild's) are left to
    the caller. ``channel`` stays the caller's to close."""
    async for request in replay_requests(channel, stop):
        await answer_as_an_empty_log(channel, request)
        return


@contextlib.asynccontextmanager
async def running(
    work: Callable[..., Coroutine[Any, Any, None]], *args: Any, seconds: float = 10
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``work(*args, stop)`` as a task for the block; then set ``stop`` and wait for it
    to end, at most ``seconds``. A task that fails, or does not end, fails the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(work(*args, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait([task], timeout=seconds)
        if not task.done():
            raise AssertionError(f"{work.__name__} did not stop within {seconds:.0f}s")
        if (failure := task.exception()) is not None:
            raise failure
