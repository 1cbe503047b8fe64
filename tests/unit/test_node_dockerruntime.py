"""The Docker adapter's part in cancelling work, without an engine: a call that creates a
container is never abandoned half-way (the clean-up after a cancel must find what it made)."""

from __future__ import annotations

import asyncio
import threading

import anyio
import anyio.to_thread
import pytest

from shipwreck_node.dockerruntime import run_to_completion

pytestmark = pytest.mark.anyio


async def test_a_cancelled_caller_is_cancelled_only_once_its_call_has_ended() -> None:
    entered, release = threading.Event(), threading.Event()
    created: list[str] = []

    def create() -> str:
        entered.set()
        release.wait()
        created.append("container")
        return "container"

    task = asyncio.ensure_future(run_to_completion(lambda: anyio.to_thread.run_sync(create)))
    try:
        await anyio.to_thread.run_sync(entered.wait)
        task.cancel()
        await anyio.wait_all_tasks_blocked()
        # The container is still being created: there is nothing to clean up yet.
        cancelled_early = task.done()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not cancelled_early
    assert created == ["container"]


async def test_an_uncancelled_call_returns_its_result() -> None:
    assert await run_to_completion(lambda: anyio.to_thread.run_sync(lambda: 42)) == 42
