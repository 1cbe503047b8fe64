"""The scheduler's node table: registrations, heartbeats, liveness."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shipwreck_contracts import NodeHeartbeat, NodeRegistered
from shipwreck_scheduler.nodes import NodeTable, ProbeSchedule
from shipwreck_scheduler.registry import KnownNode
from shipwreck_scheduler.settings import SchedulerSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODE = uuid.uuid4()


def _beat(at: datetime, free: int = 1000) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=NODE,
        hostname="n1",
        cpu_count=2,
        mem_total_mb=4096,
        mem_free_mb=free,
        load_avg=0.5,
        at=at,
    )


def test_registration_is_new_once() -> None:
    table = NodeTable()
    msg = NodeRegistered(node_id=NODE, hostname="n1", cpu_count=2, mem_total_mb=4096, started_at=T0)
    assert table.register(msg) is True
    assert table.register(msg) is False


def test_a_late_heartbeat_never_rolls_the_view_back() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0 + timedelta(seconds=4), free=700))
    table.heartbeat(_beat(T0 + timedelta(seconds=2), free=900))
    assert table.nodes[NODE].mem_free_mb == 700


def test_only_recently_heard_nodes_are_live() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0))
    assert [v.node_id for v in table.live(T0 + timedelta(seconds=9), timedelta(seconds=10))] == [
        NODE
    ]
    assert table.live(T0 + timedelta(seconds=11), timedelta(seconds=10)) == []


TIMEOUT = timedelta(seconds=10)
DEAF = timedelta(seconds=5)


def _lose(table: NodeTable, now: datetime) -> list[uuid.UUID]:
    """One liveness round at ``now`` by a scheduler that hears its own probes."""
    table.heard(now, DEAF)
    found = [v.node_id for v in table.silent(now, TIMEOUT, DEAF)]
    for node_id in found:
        table.mark_lost(node_id)
    return found


def test_a_silent_node_is_declared_lost_once_and_found_again_by_its_heartbeat() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0))
    assert _lose(table, T0 + timedelta(seconds=9)) == []
    assert _lose(table, T0 + timedelta(seconds=11)) == [NODE]
    assert _lose(table, T0 + timedelta(seconds=12)) == []
    table.heartbeat(_beat(T0 + timedelta(seconds=13)))
    assert NODE not in table.lost


def test_a_scheduler_that_hears_nobody_declares_nobody_lost() -> None:
    table = NodeTable()
    table.heard(T0, DEAF)
    table.heartbeat(_beat(T0))
    # Nothing arrives for 20 s, not even the scheduler's own probes: the broker is away.
    assert table.silent(T0 + timedelta(seconds=20), TIMEOUT, DEAF) == []


def test_after_a_deaf_stretch_every_node_gets_a_full_timeout_again() -> None:
    table = NodeTable()
    table.heard(T0, DEAF)
    table.heartbeat(_beat(T0))
    back = T0 + timedelta(seconds=20)  # the broker is back; the node's heartbeat is not yet
    lost_at = None
    for second in range(15):  # the scheduler's probes come back every second again
        if _lose(table, back + timedelta(seconds=second)):
            lost_at = second
            break
    assert lost_at == 11


def test_after_a_deaf_stretch_its_nodes_can_be_placed_on_again() -> None:
    table = NodeTable()
    table.heard(T0, DEAF)
    table.heartbeat(_beat(T0))
    back = T0 + timedelta(seconds=20)
    assert table.deaf(back, DEAF)
    assert table.live(back, TIMEOUT) == []  # while deaf, nothing is known to be live
    table.heard(back, DEAF)  # the first probe after the outage
    assert not table.deaf(back, DEAF)
    assert [v.node_id for v in table.live(back, TIMEOUT)] == [NODE]


def test_nodes_recorded_before_a_restart_are_watched_again_and_a_dead_one_is_lost() -> None:
    table = NodeTable()
    other = uuid.uuid4()
    known = [
        KnownNode(NODE, "n1", 2, 4096, lost=False),
        KnownNode(other, "n2", 2, 4096, lost=True),
    ]
    assert table.restore(known, T0) == 2
    assert other in table.lost  # lost before the restart: not declared again
    assert _lose(table, T0 + timedelta(seconds=9)) == []
    assert _lose(table, T0 + timedelta(seconds=11)) == [NODE]


def test_restoring_keeps_what_a_node_said_since_the_start() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0 + timedelta(seconds=1), free=123))
    assert table.restore([KnownNode(NODE, "n1", 2, 4096, lost=False)], T0) == 0
    assert table.nodes[NODE].mem_free_mb == 123


def test_a_lost_node_that_heartbeats_again_is_announced_as_returned_once() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0))
    _lose(table, T0 + timedelta(seconds=11))
    assert table.returning(_beat(T0 - timedelta(seconds=1))) is None  # late, from before
    back = _beat(T0 + timedelta(seconds=30))
    returned = table.returning(back)
    assert returned is not None
    assert (returned.node_id, returned.silent_since, returned.at) == (NODE, T0, back.at)
    table.heartbeat(back)
    assert table.returning(_beat(T0 + timedelta(seconds=32))) is None


def test_a_live_node_is_never_announced_as_returned() -> None:
    table = NodeTable()
    assert table.returning(_beat(T0)) is None
    table.heartbeat(_beat(T0))
    assert table.returning(_beat(T0 + timedelta(seconds=2))) is None


def test_a_lost_node_that_registers_again_restarted_and_is_not_lost_any_more() -> None:
    table = NodeTable()
    table.heartbeat(_beat(T0))
    _lose(table, T0 + timedelta(seconds=11))
    table.register(
        NodeRegistered(node_id=NODE, hostname="n1", cpu_count=2, mem_total_mb=4096, started_at=T0)
    )
    # Its registration gets it its assignment; its heartbeats announce nothing more.
    assert NODE not in table.lost
    assert table.returning(_beat(T0 + timedelta(seconds=30))) is None


def test_the_probe_goes_at_most_once_a_second_however_often_liveness_is_checked() -> None:
    probes = ProbeSchedule()
    quarter = timedelta(seconds=0.25)
    sent = [k for k in range(40) if probes.due(T0 + k * quarter)]  # 10 s of rounds
    assert sent == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    slow = ProbeSchedule()
    assert all(slow.due(T0 + k * timedelta(seconds=1.5)) for k in range(5))


def test_by_default_a_silent_node_is_lost_within_a_quarter_second_of_its_timeout() -> None:
    settings = SchedulerSettings()
    timeout = timedelta(seconds=settings.node_timeout_seconds)
    check = timedelta(seconds=settings.liveness_check_seconds)
    deaf = timedelta(seconds=settings.deaf_after_seconds)
    for offset in (0.0, 0.1, 0.2, 0.3):  # where the last heartbeat falls between two rounds
        table, probes = NodeTable(), ProbeSchedule()
        last = T0 + timedelta(seconds=offset)
        table.heartbeat(_beat(last))
        lost_at = None
        for k in range(80):  # the rounds of 20 s; only the probe rounds hear anything
            now = T0 + k * check
            if probes.due(now):
                table.heard(now, deaf)
            if table.silent(now, timeout, deaf):
                lost_at = now
                break
        assert lost_at is not None
        assert timeout < lost_at - last <= timeout + timedelta(seconds=0.25)


def test_a_restored_or_only_registered_node_is_placed_on_once_it_reports() -> None:
    table = NodeTable()
    other = uuid.uuid4()
    table.restore([KnownNode(NODE, "n1", 2, 4096, lost=False)], T0)
    table.register(
        NodeRegistered(node_id=other, hostname="n2", cpu_count=2, mem_total_mb=4096, started_at=T0)
    )
    # Live (seen at the restart, or registering), but their free memory is not known yet.
    assert {v.node_id for v in table.live(T0, TIMEOUT)} == {NODE, other}
    assert table.placeable(T0, TIMEOUT) == []
    table.heartbeat(_beat(T0 + timedelta(seconds=1)))
    assert [v.node_id for v in table.placeable(T0 + timedelta(seconds=1), TIMEOUT)] == [NODE]
