"""One update is executed and encoded once for all the subscribers that asked the same."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from shipwreck_api.commands import Actions
from shipwreck_api.fanout import RESULTS, encode_frame
from shipwreck_api.live import Live
from shipwreck_api.schema import ApiContext, schema
from shipwreck_contracts import LogLine, LogStream
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_actions import ListBus
from tests.unit.test_api_story import T0, Log, Relayed, deployment

pytestmark = pytest.mark.anyio

UPDATES = """subscription($id: ID!, $after: Int) {
  deploymentUpdates(id: $id) { id status sequence history { status } app
    logs(after: $after) { sequence text } }
  }"""


def _line(d: uuid.UUID, sequence: int) -> LogLine:
    return LogLine(
        deployment_id=d, stream=LogStream.BUILD, sequence=sequence, text=f"#{sequence}", at=T0
    )


def _feed(live: Live, item: Relayed) -> None:
    live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})


async def _subscribe(live: Live, query: str, **variables: Any) -> AsyncGenerator[Any, None]:
    context = {"api": ApiContext(live=live, actions=Actions(live, ListBus()), actor="admin")}
    stream = await schema.subscribe(query, variable_values=variables, context_value=context)
    assert not hasattr(stream, "errors"), stream
    return stream


async def test_many_subscribers_share_one_execution_and_one_encoding_per_update() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web")
    _feed(live, relayed[0])
    streams = [await _subscribe(live, UPDATES, id=str(d)) for _ in range(50)]
    firsts = [await anext(s) for s in streams]
    hits = RESULTS.hits
    _feed(live, relayed[1])  # INITIALIZED
    updates = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 1)
    assert all(u.errors is None for u in firsts + updates)
    assert updates[0].data["deploymentUpdates"]["status"] == "INITIALIZED"
    # One execution: every subscriber got the very same result data.
    assert all(u.data is updates[0].data for u in updates)
    assert RESULTS.hits - hits == 49
    frames = [
        encode_frame({"id": str(i), "type": "next", "payload": {"data": u.data}})
        for i, u in enumerate(updates)
    ]
    assert all(f is not None for f in frames)
    decoded = [json.loads(f or "") for f in frames]
    assert [m["id"] for m in decoded] == [str(i) for i in range(50)]
    assert all(m["payload"] == {"data": updates[0].data} for m in decoded)
    for s in streams:
        await s.aclose()


async def test_different_selections_of_one_update_are_executed_apart() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web")
    _feed(live, relayed[0])
    for n in range(3):
        live.receive(_line(d, n), {})
    ids_only = "subscription($id: ID!) { deploymentUpdates(id: $id) { id } }"
    streams = [
        await _subscribe(live, ids_only, id=str(d)),
        await _subscribe(live, UPDATES, id=str(d)),
        await _subscribe(live, UPDATES, id=str(d), after=1),  # another value below the root
    ]
    for stream in streams:
        await anext(stream)
    _feed(live, relayed[1])
    small, all_lines, last_line = await asyncio.wait_for(
        asyncio.gather(*(anext(s) for s in streams)), 1
    )
    assert small.data == {"deploymentUpdates": {"id": str(d)}}
    assert [x["sequence"] for x in all_lines.data["deploymentUpdates"]["logs"]] == [0, 1, 2]
    assert [x["sequence"] for x in last_line.data["deploymentUpdates"]["logs"]] == [2]
    for stream in streams:
        await stream.aclose()


def test_only_shared_results_are_encoded_by_the_fanout() -> None:
    assert encode_frame({"id": "1", "type": "next", "payload": {"data": {"x": 1}}}) is None
    assert encode_frame({"type": "connection_ack"}) is None
