"""`shipwreck watch|unwatch|rollback|cancel|ledger` against a real api process on RabbitMQ.

The test plays the orchestrator (relayed events) and the watcher (ledger entries with their
log positions), and reads the commands the api publishes for what the CLI asked.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aio_pika
import pytest

from shipwreck_contracts import (
    CancelDeployment,
    LedgerEntryRecorded,
    Message,
    RollbackApp,
    SetAppWatch,
    Trigger,
    decode_message,
    tag_of,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.e2e.test_cli import Orchestrator, _shipwreck, api, orchestrator
from tests.e2e.test_cli_history import _until
from tests.support.platform import platform as _platform  # noqa: F401
from tests.unit.test_api_story import T0, sha, story

__all__ = ["api", "orchestrator"]  # fixtures shared with test_cli

pytestmark = [pytest.mark.anyio, pytest.mark.infra, pytest.mark.slow]

HELLO = "https://git.example.com/team/hello.git"  # the story's app "hello" deploys its main


async def _next(queue: aio_pika.abc.AbstractQueue) -> Message:
    for _ in range(200):  # 10 s
        incoming = await queue.get(no_ack=True, fail=False)
        if incoming is not None:
            return decode_message(incoming.body)
        await asyncio.sleep(0.05)
    raise AssertionError("the api published no command")


async def test_watch_unwatch_rollback_and_cancel_publish_their_commands(
    api: str, orchestrator: Orchestrator
) -> None:
    s = story(start=1200)
    await orchestrator.relay(s.relayed, pause=0)
    commands = await orchestrator.channel.declare_queue(exclusive=True, auto_delete=True)
    for cls in (SetAppWatch, RollbackApp, CancelDeployment):
        await commands.bind(orchestrator.exchange, routing_key=tag_of(cls))
    await _until(api, "status", contains="SUPERSEDED")

    code, out, err = await _shipwreck(api, "unwatch", "hello")
    assert (code, out, err) == (0, "app hello: no longer watching branch main (requested)\n", "")
    unwatch = await _next(commands)
    assert isinstance(unwatch, SetAppWatch)
    assert (unwatch.app, unwatch.watching) == ("hello", False)
    code, out, _ = await _shipwreck(api, "watch", "hello")
    assert (code, out) == (0, "app hello: watching branch main (requested)\n")
    watch = await _next(commands)
    assert isinstance(watch, SetAppWatch)
    assert (watch.app, watch.watching) == ("hello", True)

    code, out, err = await _shipwreck(api, "rollback", "hello", str(s.first), "--no-follow")
    assert code == 0, err
    rollback = await _next(commands)
    assert isinstance(rollback, RollbackApp)
    assert (rollback.app, rollback.deployment_id) == ("hello", s.first)
    assert out == f"deployment {rollback.new_deployment_id}\n"

    # The rollback is REQUESTED (the orchestrator played here records nothing): cancel it.
    code, out, err = await _shipwreck(api, "cancel", str(rollback.new_deployment_id))
    assert (code, err) == (0, "")
    assert out == f"cancellation of deployment {rollback.new_deployment_id} requested\n"
    cancel = await _next(commands)
    assert isinstance(cancel, CancelDeployment)
    assert cancel.deployment_id == rollback.new_deployment_id

    code, _, err = await _shipwreck(api, "watch", "ghost")
    assert code == 1
    assert "no app named 'ghost'" in err


async def test_ledger_shows_an_apps_entries_newest_last_with_their_reasons(
    api: str, orchestrator: Orchestrator
) -> None:
    s = story(start=1400)
    await orchestrator.relay(s.relayed, pause=0)
    entries = [
        LedgerEntryRecorded(
            repo_url=HELLO,
            branch="main",
            apps=["hello"],
            kind="COMMIT_OBSERVED",
            commit=sha(1),
            reason="baseline (the head when watching began)",
            at=T0 + timedelta(seconds=1),
            trigger=Trigger.WATCH,
        ),
        LedgerEntryRecorded(
            repo_url=HELLO,
            branch="main",
            apps=["hello"],
            kind="WEBHOOK_REJECTED",
            commit=sha(2),
            delivery_id="d-7",
            reason="duplicate delivery",
            at=T0 + timedelta(seconds=2),
            provider="gitea",
            trigger=Trigger.WEBHOOK,
        ),
    ]
    # As the watcher's relay publishes them live: positions in the watcher's log.
    for position, entry in reversed(list(enumerate(entries, start=1))):
        await orchestrator.publish(entry, {ORIGIN_HEADER: "watcher", POSITION_HEADER: position})
    out = await _until(api, "ledger", "hello", contains="baseline")
    head, columns, baseline, duplicate = out.splitlines()
    assert head == f"ledger of hello: {HELLO} branch main (watching)"
    assert columns.split()[:3] == ["TIME", "KIND", "VIA"]
    assert baseline.split()[:8] == [
        "2026-01-02",
        "03:04:06",
        "COMMIT_OBSERVED",
        "WATCH",
        "main",
        sha(1)[:12],
        "-",
        "accepted",
    ]
    assert duplicate.split()[2:9] == [
        "WEBHOOK_REJECTED",
        "WEBHOOK",
        "gitea",
        "main",
        sha(2)[:12],
        "d-7",
        "rejected",
    ]
    assert duplicate.endswith("duplicate delivery")

    code, out, _ = await _shipwreck(api, "ledger", "hello", "-n", "1")
    assert (code, out.splitlines()[-1]) == (0, duplicate)
    code, _, err = await _shipwreck(api, "ledger", "ghost")
    assert code == 1
    assert "no app named 'ghost'" in err
