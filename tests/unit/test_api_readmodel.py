"""The api's read model is a pure fold: any order, any duplicates, the same answers."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shipwreck_api.commands import expected_request
from shipwreck_api.readmodel import LogBuffers, ReadModel
from shipwreck_contracts import (
    DeploymentRequested,
    DeploymentStatus,
    LogLine,
    LogStream,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    NodeStatus,
    Trigger,
)
from tests.unit.test_api_story import (
    NODE,
    T0,
    Log,
    Relayed,
    deployment,
    sha,
    story,
)

S = DeploymentStatus


def _model(relayed: list[Relayed]) -> ReadModel:
    model = ReadModel()
    for item in relayed:
        model.apply(item.message, origin=item.origin, position=item.position)
    return model


def _answers(model: ReadModel) -> tuple[object, ...]:
    return (
        model.deployments(first=1000),
        model.apps(),
        [model.app(n) for n in ("hello", "other", "nobody")],
        model.running_on(NODE),
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_order_with_duplicates_gives_the_same_answers(data: st.DataObject) -> None:
    relayed = story().relayed
    duplicates = data.draw(st.lists(st.sampled_from(relayed), max_size=len(relayed)))
    shuffled = data.draw(st.permutations([*relayed, *duplicates]))
    assert _answers(_model(shuffled)) == _answers(_model(relayed))


def test_history_lists_every_status_in_order_with_a_message() -> None:
    s = story()
    record = _model(s.relayed).deployment(s.failed)
    assert record is not None
    assert [h.status for h in record.history] == [
        S.REQUESTED,
        S.INITIALIZED,
        S.SCHEDULED,
        S.CLONING,
        S.BUILDING,
        S.ERRORED,
    ]
    assert record.history[-1].message == (
        "failed while BUILDING: pip install failed: no matching distribution for flask==99"
    )
    assert record.status is S.ERRORED
    assert record.error == "pip install failed: no matching distribution for flask==99"
    assert [h.at for h in record.history] == sorted(h.at for h in record.history)


def test_deployment_fields_come_from_its_events() -> None:
    s = story()
    record = _model(s.relayed).deployment(s.second)
    assert record is not None
    assert (record.app, record.status, record.commit, record.node_id) == (
        "hello",
        S.RUNNING,
        sha(2),
        NODE,
    )
    assert record.url == "http://hello.apps.example.com"
    assert record.trigger is Trigger.MANUAL
    assert record.actor == "admin"
    assert [e.sequence for e in record.events] == list(range(1, len(record.events) + 1))
    assert record.events[0].type == "deployment.requested.v1"
    assert json.loads(record.events[-1].data)["url"] == "http://hello.apps.example.com"


def test_app_current_is_the_latest_running_and_the_old_one_is_superseded() -> None:
    s = story()
    model = _model(s.relayed)
    app = model.app("hello")
    assert app is not None
    assert app.current is not None
    assert app.current.id == s.second
    assert app.url == "http://hello.apps.example.com"
    assert app.latest is not None
    assert app.latest.id == s.failed
    first = model.deployment(s.first)
    assert first is not None
    assert first.status is S.SUPERSEDED
    assert first.history[-1].message == f"superseded by deployment {s.second}"
    assert [r.id for r in model.running_on(NODE)] == [s.other, s.second]


def test_during_a_takeover_the_later_running_one_is_current() -> None:
    log = Log()
    old, a = deployment(log, app="web", commit=sha(1), first=True)
    new, b = deployment(log, app="web", commit=sha(2))
    app = _model([*a, *b]).app("web")  # both RUNNING: the old is not superseded yet
    assert app is not None
    assert app.current is not None
    assert app.current.id == new
    assert old != new


def test_apps_list_watch_state_and_are_sorted() -> None:
    model = _model(story().relayed)
    assert [(a.name, a.watching, a.repo_url) for a in model.apps()] == [
        ("hello", True, "https://git.example.com/team/hello.git"),
        ("other", True, "https://git.example.com/team/other.git"),
    ]
    other = model.app("other")
    assert other is not None
    assert other.current is not None


def test_deployments_are_newest_first_and_filter_by_app() -> None:
    s = story()
    model = _model(s.relayed)
    assert [r.id for r in model.deployments()] == [
        s.cancelled,
        s.other,
        s.failed,
        s.second,
        s.first,
    ]
    assert [r.id for r in model.deployments(app="hello", first=2)] == [s.failed, s.second]


def test_a_deployment_is_shown_once_its_request_is_known() -> None:
    _, relayed = deployment(Log(), app="late")
    model = _model(relayed[1:])
    assert model.deployments() == []
    first = relayed[0]
    change = model.apply(first.message, origin=first.origin, position=first.position)
    assert change.deployments
    assert model.deployments()[0].status is S.RUNNING


def test_a_duplicate_changes_nothing() -> None:
    _, relayed = deployment(Log(), app="dup")
    model = _model(relayed)
    again = relayed[3]
    change = model.apply(again.message, origin=again.origin, position=again.position)
    assert not change.deployments
    assert not change.apps


def test_an_expected_deployment_shows_until_its_request_arrives_then_is_identical() -> None:
    d = uuid.uuid4()
    expected = expected_request(
        d,
        repo_url="https://git.example.com/a/b.git",
        branch="main",
        watch=True,
        trigger=Trigger.MANUAL,
        actor="admin",
        app=None,
        commit=None,
        at=T0,
    )
    model = ReadModel()
    model.expect(expected)
    assert model.deployment(d) == expected
    assert model.deployments() == [expected]
    requested = DeploymentRequested(
        deployment_id=d,
        repo_url="https://git.example.com/a/b.git",
        branch="main",
        watch=True,
        trigger=Trigger.MANUAL,
        actor="admin",
        at=T0,
    )
    change = model.apply(requested, origin="orchestrator", position=7)
    assert change.deployments == {d: S.REQUESTED}  # not a status change
    real = model.deployment(d)
    assert real is not None
    assert len(real.events) == 1
    assert (real.status, real.history, real.requested_at) == (
        expected.status,
        expected.history,
        expected.requested_at,
    )


def _beat(at_offset: int, *, free: int = 512) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=NODE,
        hostname="n1",
        cpu_count=2,
        mem_total_mb=1024,
        mem_free_mb=free,
        load_avg=0.5,
        at=T0 + timedelta(seconds=at_offset),
    )


def test_nodes_keep_the_newest_heartbeat_and_the_scheduler_verdicts() -> None:
    model = ReadModel()
    assert model.apply_node(_beat(10, free=100))
    assert not model.apply_node(_beat(5, free=900))  # older: ignored
    row = model.nodes.row(NODE)
    assert row is not None
    assert (row.mem_free_mb, row.status) == (100, NodeStatus.READY)
    model.apply_node(NodeDrained(node_id=NODE, actor="admin", at=T0))
    assert model.nodes.all()[0].status is NodeStatus.DRAINED
    model.apply_node(NodeLost(node_id=NODE, last_seen_at=T0, at=T0 + timedelta(seconds=40)))
    assert model.nodes.all()[0].status is NodeStatus.LOST
    model.apply_node(_beat(50))  # it came back
    assert model.nodes.all()[0].status is NodeStatus.DRAINED


def _line(sequence: int, *, attempt: int = 1, d: uuid.UUID = NODE) -> LogLine:
    return LogLine(
        deployment_id=d,
        attempt=attempt,
        stream=LogStream.BUILD,
        sequence=sequence,
        text=f"line {sequence}",
        at=T0,
    )


def test_log_buffers_order_dedupe_and_bound() -> None:
    buffers = LogBuffers(max_lines=3, max_deployments=2)
    for n in (2, 0, 1, 1):
        buffers.add(_line(n))
    assert [line.sequence for line in buffers.lines(NODE)] == [0, 1, 2]
    assert not buffers.add(_line(2))
    buffers.add(_line(0, attempt=2))
    assert [(x.attempt, x.sequence) for x in buffers.lines(NODE)] == [(1, 1), (1, 2), (2, 0)]
    others = [uuid.uuid4(), uuid.uuid4()]
    for d in others:
        buffers.add(_line(0, d=d))
    assert buffers.lines(NODE) == []  # the least recently active deployment went first
    assert all(buffers.lines(d) for d in others)
