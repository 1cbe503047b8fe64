"""Until the orchestrator's replay has been folded, the api neither answers an app that
exists as unknown nor a list as short: questions wait for the replay a while, then get a
REBUILDING error that says why."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from shipwreck_api.commands import Actions
from shipwreck_api.errors import Rebuilding
from shipwreck_api.live import Live
from shipwreck_api.schema import ApiContext, schema
from shipwreck_contracts import ORCHESTRATOR_ORIGIN, ReplayFinished
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_actions import ListBus
from tests.unit.test_api_story import T0, story

pytestmark = pytest.mark.anyio

APPS = "{ apps { name } }"
APP = 'query { app(name: "hello") { name current { status } } }'
DEPLOYMENTS = "{ deployments { id } }"
FINISHED = ReplayFinished(origin=ORCHESTRATOR_ORIGIN, last_position=0, at=T0)


def _live(*, read_wait: float) -> Live:
    """A read model that has received the story live, but not the end of its replay."""
    live = Live(read_wait=read_wait)
    for item in story().relayed:
        live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})
    return live


async def _ask(live: Live, query: str) -> Any:
    context = {"api": ApiContext(live=live, actions=Actions(live, ListBus()), actor="test")}
    return await schema.execute(query, context_value=context)


async def test_a_question_asked_while_rebuilding_is_answered_once_the_replay_has_finished() -> None:
    live = _live(read_wait=5)
    asked = asyncio.ensure_future(_ask(live, APP))
    await asyncio.sleep(0.05)
    assert not asked.done()  # waiting for the replay, not answering from half a model
    live.receive(FINISHED, {})
    result = await asyncio.wait_for(asked, 5)
    assert result.errors is None
    assert result.data == {"app": {"name": "hello", "current": {"status": "RUNNING"}}}


@pytest.mark.parametrize("query", [APP, APPS, DEPLOYMENTS])
async def test_a_question_gets_a_rebuilding_error_when_the_replay_does_not_finish_in_time(
    query: str,
) -> None:
    live = _live(read_wait=0.05)
    result = await _ask(live, query)
    # Nothing half-known is answered: a nullable field is null, a list's null ends the data.
    assert result.data in (None, {"app": None})
    (error,) = result.errors
    assert error.extensions == {"code": "REBUILDING"}
    assert "the read model is being rebuilt" in error.message
    assert "has not yet been able to ask the orchestrator for a replay" in error.message
    assert "readModel { rebuilding }" in error.message


async def test_the_error_says_when_the_replay_was_asked_for() -> None:
    live = _live(read_wait=0.01)
    live.replay_requesting(T0)
    live.replay_requested()
    with pytest.raises(Rebuilding, match=re.escape(f"replay of its log at {T0.isoformat()}")):
        await live.ready()


async def test_the_read_model_status_answers_at_once_while_rebuilding() -> None:
    live = _live(read_wait=5)
    result = await asyncio.wait_for(_ask(live, "{ readModel { rebuilding } }"), 1)
    assert result.errors is None
    assert result.data == {"readModel": {"rebuilding": True}}


async def test_a_command_on_a_known_app_waits_for_the_replay_and_publishes_nothing_before() -> None:
    live = _live(read_wait=0.05)
    bus = ListBus()
    actions = Actions(live, bus)
    with pytest.raises(Rebuilding):
        await actions.redeploy(app="hello", actor="admin")
    assert bus.sent == []
    live.receive(FINISHED, {})
    record = await actions.redeploy(app="hello", actor="admin")
    assert record.app == "hello"
    assert len(bus.sent) == 1
