"""The api's read model is a pure fold: any order, any duplicates, the same answers."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shipwreck_api.commands import expected_request
from shipwreck_api.readmodel import (
    Key,
    LogBuffers,
    NodesView,
    ReadModel,
    diff_states,
    fold_deployment,
    state_at,
    status_changes,
)
from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelRefused,
    DeploymentEvent,
    DeploymentRequested,
    DeploymentStatus,
    DeploymentSuperseded,
    LogLine,
    LogStream,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    NodeStatus,
    Trigger,
    tag_of,
)
from tests.unit.test_api_story import (
    NODE,
    T0,
    Log,
    Relayed,
    deployment,
    refused_cancel,
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
    # The oldest line was rotated out: a SYSTEM line stands in for it, with its place.
    notice, *kept = buffers.lines(NODE)
    assert [(x.attempt, x.sequence) for x in kept] == [(1, 1), (1, 2), (2, 0)]
    assert (notice.stream, notice.attempt, notice.sequence) == (LogStream.SYSTEM, 1, 0)
    assert notice.text.startswith("1 earlier line dropped")
    others = [uuid.uuid4(), uuid.uuid4()]
    for d in others:
        buffers.add(_line(0, d=d))
    assert buffers.lines(NODE) == []  # the least recently active deployment went first
    assert all(buffers.lines(d) for d in others)


# --- sequence, resuming, folding incrementally ---------------------------------------------------


def test_in_order_events_extend_the_record_to_what_a_full_fold_gives() -> None:
    s = story()
    model = _model(s.relayed)
    for deployment_id in (s.first, s.second, s.failed, s.cancelled, s.other):
        record = model.deployment(deployment_id)
        assert record is not None
        events = [
            ((r.origin, r.position, tag_of(r.message)), r.message)
            for r in s.relayed
            if getattr(r.message, "deployment_id", None) == deployment_id
        ]
        assert record == fold_deployment(deployment_id, events)
        assert record.sequence == len(record.events) == len(events)


def test_status_changes_after_a_sequence_are_the_states_a_client_missed() -> None:
    d, relayed = deployment(Log(), app="web")
    record = _model(relayed).deployment(d)
    assert record is not None
    states = list(status_changes(record, after=3))  # it saw REQUESTED, INITIALIZED, SCHEDULED
    assert [(r.sequence, r.status) for r in states] == [
        (4, S.CLONING),
        (5, S.BUILDING),
        (6, S.STARTING),
        (7, S.RUNNING),
    ]
    assert states[-1] is record
    assert states[0].history == record.history[:4]
    assert states[1].commit == sha(1)  # each state is the fold of the events up to it
    assert list(status_changes(record, after=7)) == []
    # Before its first event a deployment is REQUESTED: the first event is not a change.
    assert [r.sequence for r in status_changes(record, after=0)][:2] == [2, 3]


# --- state at a time, and what changed ------------------------------------------------------------


def _at(relayed: list[Relayed], index: int) -> datetime:
    return relayed[index].message.at


def test_state_before_a_redeploy_shows_the_previous_deployment_as_current() -> None:
    s = story()
    model = _model(s.relayed)
    second_requested = next(
        i
        for i, r in enumerate(s.relayed)
        if isinstance(r.message, DeploymentRequested) and r.message.deployment_id == s.second
    )
    before = model.state_at(_at(s.relayed, second_requested) - timedelta(milliseconds=1))
    hello = before.app("hello")
    assert hello is not None
    assert hello.current is not None
    assert hello.current.id == s.first
    assert hello.current.status is S.RUNNING
    assert before.deployment(s.second) is None
    assert before.app("other") is None  # not deployed yet
    now = model.state_at(_at(s.relayed, -1))
    now_hello = now.app("hello")
    assert now_hello is not None
    assert now_hello.current is not None
    assert now_hello.current.id == s.second


def test_state_in_the_middle_of_a_deployment_shows_its_status_then() -> None:
    d, relayed = deployment(Log(), app="web")
    state = _model(relayed).state_at(_at(relayed, 4))  # BUILDING
    record = state.deployment(d)
    assert record is not None
    assert (record.status, record.sequence, record.url) == (S.BUILDING, 5, None)
    assert state.apps()[0].current is None


def test_state_at_reuses_folded_records_without_changing_any_answer() -> None:
    s = story()
    model = _model(s.relayed)
    # The pure function's inputs, straight from the story: every event by deployment / app.
    events: dict[uuid.UUID, dict[Key, DeploymentEvent]] = {}
    watch: dict[str, dict[Key, AppWatchChanged]] = {}
    for r in s.relayed:
        key = (r.origin, r.position, tag_of(r.message))
        if isinstance(r.message, AppWatchChanged):
            watch.setdefault(r.message.app, {})[key] = r.message
        else:
            events.setdefault(r.message.deployment_id, {})[key] = r.message
    for item in s.relayed:
        at = item.message.at
        fast = model.state_at(at)
        slow = state_at(at, events, watch)
        assert fast.records == slow.records
        assert fast.app_records == slow.app_records


def test_diff_across_a_redeploy_names_the_app_and_the_status_changes() -> None:
    s = story()
    model = _model(s.relayed)
    second = [r for r in s.relayed if getattr(r.message, "deployment_id", None) == s.second]
    start = second[0].message.at - timedelta(milliseconds=1)
    swap = next(r for r in s.relayed if isinstance(r.message, DeploymentSuperseded))
    end = swap.message.at
    diff = diff_states(model.state_at(start), model.state_at(end))
    assert [
        (c.app, c.before.id if c.before else None, c.after.id if c.after else None)
        for c in diff.current
    ] == [("hello", s.first, s.second)]
    assert [(c.id, c.before, c.after) for c in diff.deployments] == [
        (s.first, S.RUNNING, S.SUPERSEDED),
        (s.second, None, S.RUNNING),
    ]
    assert diff.added_apps == ()
    assert diff.removed_apps == ()
    later = diff_states(model.state_at(start), model.state_at(_at(s.relayed, -1)))
    assert later.added_apps == ("other",)
    backwards = diff_states(model.state_at(_at(s.relayed, -1)), model.state_at(start))
    assert backwards.removed_apps == ("other",)


def test_nodes_at_a_time_show_their_status_and_load_then() -> None:
    nodes = NodesView(sample_interval=timedelta(seconds=10))
    for offset, free in ((0, 100), (5, 150), (10, 200), (20, 300)):
        nodes.apply(_beat(offset, free=free))
    nodes.apply(NodeLost(node_id=NODE, last_seen_at=T0, at=T0 + timedelta(seconds=30)))
    assert nodes.at(T0 - timedelta(seconds=1)) == []
    assert [(r.mem_free_mb, r.status) for r in nodes.at(T0 + timedelta(seconds=12))] == [
        (200, NodeStatus.READY)
    ]
    assert nodes.at(T0 + timedelta(seconds=31))[0].status is NodeStatus.LOST
    assert nodes.all()[0].status is NodeStatus.LOST


# --- log rotation ------------------------------------------------------------------------------


def test_log_rotation_counts_what_it_dropped_and_says_so_in_its_place() -> None:
    buffers = LogBuffers(max_lines=5)
    for n in range(12):
        buffers.add(_line(n))
    assert buffers.dropped(NODE) == 7
    notice, *kept = buffers.lines(NODE)
    assert [line.sequence for line in kept] == [7, 8, 9, 10, 11]
    assert (notice.stream, notice.sequence) == (LogStream.SYSTEM, 6)
    assert notice.text.startswith("7 earlier lines dropped")
    # Resuming after a line that was dropped: told how many of the rest are gone.
    resumed = buffers.lines(NODE, after=(1, 3))
    assert resumed[0].text.startswith("3 earlier lines dropped")
    assert [line.sequence for line in resumed[1:]] == [7, 8, 9, 10, 11]
    # After the notice's own place, or after a kept line: exactly the kept lines after it.
    assert [line.sequence for line in buffers.lines(NODE, after=(1, 6))] == [7, 8, 9, 10, 11]
    assert [line.sequence for line in buffers.lines(NODE, after=(1, 9))] == [10, 11]
    assert not buffers.add(_line(2))  # older than what was rotated out


def test_a_refused_cancel_is_in_the_story_and_changes_no_status() -> None:
    s = story()
    last = max(r.position for r in s.relayed)
    relayed = refused_cancel(
        last + 1, s.failed, app="hello", status=S.ERRORED, at=T0 + timedelta(hours=1)
    )
    refused = relayed.message
    assert isinstance(refused, DeploymentCancelRefused)
    model = _model([*s.relayed, relayed])
    record = model.deployment(s.failed)
    assert record is not None
    assert record.status is S.ERRORED
    assert record.error == "pip install failed: no matching distribution for flask==99"
    assert record.history[-1] == (S.ERRORED, refused.at, refused.reason)
    assert record.events[-1].type == tag_of(DeploymentCancelRefused)
    # Subscribers to status changes are sent nothing for it: the status did not change.
    assert list(status_changes(record, after=record.sequence - 1)) == []
