"""Updates written straight to caught-up subscribers' sockets keep every subscription rule.

Each subscriber runs as strawberry runs an operation (its own task, its operation id set,
the schema's own subscribe); its socket is a fake that records the frames written to it.
What the subscriber's generator yields is recorded on the same wire, so the order of both
ways together is what a client would read.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, cast

import pytest
from graphql import ExecutionResult, GraphQLError

from shipwreck_api.commands import Actions
from shipwreck_api.direct import SocketSink, serve_operation
from shipwreck_api.fanout import SharedResultExecutor
from shipwreck_api.live import Live
from shipwreck_api.schema import ApiContext, schema
from shipwreck_contracts import DeploymentStatus, LogLine, LogStream
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_actions import ListBus
from tests.unit.test_api_story import T0, Log, Relayed, deployment

pytestmark = pytest.mark.anyio
S = DeploymentStatus

UPDATES = """subscription($id: ID!, $after: Int) {
  deploymentUpdates(id: $id, after: $after) { id status sequence history { status } } }"""
LOGS = """subscription($id: ID!, $after: Int) {
  deploymentLogs(id: $id, after: $after) { sequence text } }"""
APP = "subscription($name: String!) { appUpdates(name: $name) { name current { status } } }"


def _text(frame: bytes) -> dict[str, Any]:
    """The message of one server-to-client websocket text frame (FIN, unmasked)."""
    assert frame[0] == 0x81
    length, start = frame[1], 2
    if length == 126:
        length, start = int.from_bytes(frame[2:4], "big"), 4
    assert frame[1] & 0x80 == 0
    assert len(frame) == start + length
    message: dict[str, Any] = json.loads(frame[start:])
    return message


class Wire:
    """What one client reads: frames written to its socket and messages sent the usual way."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.frames: list[bytes] = []
        self.accepting = True

    def write_frame(self, frame: bytes) -> bool:
        if not self.accepting:
            return False  # as a socket above its high-water mark
        self.frames.append(frame)
        self.messages.append(("frame", _text(frame)))
        return True

    def data(self, field: str) -> list[dict[str, Any]]:
        return [m["payload"]["data"][field] if how == "frame" else m for how, m in self.messages]

    def ways(self) -> list[str]:
        return [how for how, _ in self.messages]


def _feed(live: Live, item: Relayed) -> None:
    live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})


def _line(d: uuid.UUID, sequence: int) -> LogLine:
    return LogLine(
        deployment_id=d, stream=LogStream.BUILD, sequence=sequence, text=f"#{sequence}", at=T0
    )


def _subscriber(
    live: Live, wire: Wire | None, query: str, field: str, *, op: str = "1", **variables: Any
) -> asyncio.Task[list[dict[str, Any]]]:
    """One subscription as strawberry's handler runs it; yields go on ``wire`` as "yield"."""

    async def run() -> list[dict[str, Any]]:
        serve_operation(op)
        context = {
            "api": ApiContext(live=live, actions=Actions(live, ListBus()), actor="a", socket=wire)
        }
        stream = await schema.subscribe(query, variable_values=variables, context_value=context)
        assert not hasattr(stream, "errors"), stream
        yielded = []
        async for result in stream:
            assert result.errors is None, result.errors
            yielded.append(result.data[field])
            if wire is not None:
                wire.messages.append(("yield", result.data[field]))
        return yielded

    return asyncio.create_task(run())


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_caught_up_subscribers_get_each_update_as_one_shared_frame_then_complete() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    _feed(live, relayed[0])
    wires = [Wire() for _ in range(20)]
    tasks = [
        _subscriber(live, w, UPDATES, "deploymentUpdates", op="1" if i % 2 else "7", id=str(d))
        for i, w in enumerate(wires)
    ]
    usual = _subscriber(live, None, UPDATES, "deploymentUpdates", id=str(d))  # no socket
    await _settle()
    for item in relayed[1:]:
        _feed(live, item)
        await _settle()
    yielded = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    expected = await asyncio.wait_for(usual, 1)
    assert [u["status"] for u in expected] == [
        "REQUESTED",
        "INITIALIZED",
        "SCHEDULED",
        "CLONING",
        "BUILDING",
        "ERRORED",
    ]
    for wire, first in zip(wires, yielded, strict=True):
        # The first state by the generator, every later one as a frame; the generator
        # ended after the terminal one (strawberry then sends "complete").
        assert first == expected[:1]
        assert wire.ways() == ["yield"] + ["frame"] * 5
        assert wire.data("deploymentUpdates") == expected
    ids = {_text(w.frames[0])["id"] for w in wires}
    assert ids == {"1", "7"}
    # One frame per update and operation id, the very same bytes for all of its subscribers.
    for wire in wires:
        twin = wires[1] if _text(wire.frames[0])["id"] == "1" else wires[0]
        assert all(a is b for a, b in zip(wire.frames, twin.frames, strict=True))
    assert live.updates.subscriber_count() == 0


async def test_a_socket_that_cannot_take_an_update_gets_it_the_usual_way_in_order() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    _feed(live, relayed[0])
    wire = Wire()
    task = _subscriber(live, wire, UPDATES, "deploymentUpdates", id=str(d))
    await _settle()
    _feed(live, relayed[1])  # INITIALIZED: written
    wire.accepting = False
    _feed(live, relayed[2])  # SCHEDULED: the socket does not drain, the generator sends it
    _feed(live, relayed[3])  # CLONING: queued behind it
    await _settle()
    wire.accepting = True
    await _settle()
    for item in relayed[4:]:  # BUILDING, ERRORED: caught up again, written
        _feed(live, item)
        await _settle()
    await asyncio.wait_for(task, 1)
    assert wire.ways() == ["yield", "frame", "yield", "yield", "frame", "frame"]
    updates = wire.data("deploymentUpdates")
    assert [u["sequence"] for u in updates] == [1, 2, 3, 4, 5, 6]  # nothing twice or lost
    assert updates[-1]["status"] == "ERRORED"


async def test_resuming_after_a_sequence_then_live_frames_sends_exactly_the_rest() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    for item in relayed[:4]:
        _feed(live, item)
    wire = Wire()
    task = _subscriber(live, wire, UPDATES, "deploymentUpdates", id=str(d), after=1)
    await _settle()
    for item in relayed[4:]:
        _feed(live, item)
        await _settle()
    await asyncio.wait_for(task, 1)
    assert wire.ways() == ["yield", "yield", "yield", "frame", "frame"]
    assert [u["sequence"] for u in wire.data("deploymentUpdates")] == [2, 3, 4, 5, 6]


async def test_log_lines_are_written_and_the_generator_keeps_the_grace_after_the_end() -> None:
    live = Live(log_grace=0.2)
    d, relayed = deployment(Log(), app="web", outcome=S.ERRORED)
    for item in relayed[:5]:  # BUILDING
        _feed(live, item)
    for n in range(3):
        live.receive(_line(d, n), {})
    wires = [Wire(), Wire()]
    tasks = [_subscriber(live, w, LOGS, "deploymentLogs", id=str(d), after=0) for w in wires]
    await _settle()
    for n in range(3, 50):
        live.receive(_line(d, n), {})
        live.receive(_line(d, n), {})  # a duplicate is neither kept nor sent
    await _settle()
    _feed(live, relayed[5])  # ERRORED: the generators take over for the last lines
    await _settle()
    live.receive(_line(d, 50), {})
    lines = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    for wire, yielded in zip(wires, lines, strict=True):
        assert [x["sequence"] for x in wire.data("deploymentLogs")] == list(range(1, 51))
        assert wire.ways() == ["yield"] * 2 + ["frame"] * 47 + ["yield"]
        assert [x["sequence"] for x in yielded] == [1, 2, 50]
    assert wires[0].frames[0] is wires[1].frames[0]
    assert live.logs.subscriber_count() == 0


async def test_app_updates_are_written_once_caught_up() -> None:
    live = Live()
    _, first = deployment(Log(), app="web", first=True)
    for item in first[:2]:
        _feed(live, item)
    wire = Wire()
    task = _subscriber(live, wire, APP, "appUpdates", name="web")
    await _settle()
    for item in first[2:]:
        _feed(live, item)
        await _settle()
    updates = wire.data("appUpdates")
    assert wire.ways()[0] == "yield"
    assert set(wire.ways()[1:]) == {"frame"}
    assert len(updates) > 2
    assert updates[-1]["current"] == {"status": "RUNNING"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live.apps.subscriber_count() == 0


async def test_a_subscriber_cancelled_while_its_socket_takes_updates_is_gone() -> None:
    live = Live()
    d, relayed = deployment(Log(), app="web")
    _feed(live, relayed[0])
    task = _subscriber(live, Wire(), UPDATES, "deploymentUpdates", id=str(d))
    await _settle()
    assert live.updates.subscriber_count(d) == 1
    task.cancel()  # the client completed the operation, or went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live.updates.subscriber_count() == 0
    _feed(live, relayed[1])  # nothing is written anywhere, nothing fails


class _FailingExecutor:
    """An executor whose every event result has an error."""

    def __init__(self) -> None:
        self.executions = 0

    def selection_signature(self) -> object:
        return ("the same selection",)

    def build_per_event_executor(self, payload: object) -> _FailingExecutor:
        return self

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        self.executions += 1
        return ExecutionResult(data=None, errors=[GraphQLError("boom")])


def test_a_result_with_errors_is_not_written_and_is_executed_once_per_update() -> None:
    executor = _FailingExecutor()
    wires = [Wire(), Wire()]
    sinks = [
        SocketSink(w, "1", cast(SharedResultExecutor, executor), lambda item: item) for w in wires
    ]
    shared: dict[Any, Any] = {}
    # Not written: the generator sends it, and strawberry formats and logs the errors.
    assert [s.send("update", shared) for s in sinks] == [False, False]
    assert executor.executions == 1
    assert all(w.frames == [] for w in wires)
