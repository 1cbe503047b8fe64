"""Background loops come back after a crash, and stay stopped when asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from shipwreck_runtime import BackgroundTasks

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_crashed_loop_is_restarted_and_each_crash_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    finished = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ConnectionError("broker down")
        finished.set()

    tasks = BackgroundTasks(restart_delay=0.01)
    tasks.add("flaky", flaky)
    with caplog.at_level(logging.ERROR):
        await tasks.start()
        await asyncio.wait_for(finished.wait(), 5)
        await tasks.stop()
    assert runs == 3
    crashes = [r for r in caplog.records if "background task flaky crashed" in r.getMessage()]
    assert len(crashes) == 2


async def test_stop_cancels_a_loop_that_keeps_crashing() -> None:
    attempts = 0

    async def broken() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("always")

    tasks = BackgroundTasks(restart_delay=0.01, max_restart_delay=0.02)
    tasks.add("broken", broken)
    await tasks.start()
    await asyncio.sleep(0.2)
    await tasks.stop()
    seen = attempts
    await asyncio.sleep(0.1)
    assert seen >= 3
    assert attempts == seen


async def test_stop_is_bounded_when_a_loop_does_not_end(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        # What a call that swallows its cancellation looks like to the loop around it.
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    tasks = BackgroundTasks(stop_timeout=0.2)
    tasks.add("stubborn", stubborn)
    await tasks.start()
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(tasks.stop(), 2)
    assert [r.getMessage() for r in caplog.records] == [
        "background task stubborn did not end within 0.2 s of being cancelled; stopping without it"
    ]
    release.set()
