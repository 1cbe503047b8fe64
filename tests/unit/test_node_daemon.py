"""The node's helper processes (Caddy, unbound): started until ready, or a clear error."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from shipwreck_node.daemon import Daemon, adopt, start_daemon
from shipwreck_node.ports import ProxyError


def _sleeper(tmp_path: Path) -> Daemon:
    return start_daemon(
        "helper",
        ["sleep", "30"],
        log_path=tmp_path / "helper.log",
        record=tmp_path / "helper.process.json",
        ready=lambda: True,
    )


def _gone_owner(record: Path) -> None:
    """Make ``record`` name an owner that has ended (a node killed since)."""
    ended = subprocess.Popen(["true"])
    created = psutil.Process(ended.pid).create_time()
    ended.wait()
    data = json.loads(record.read_text())
    data.update(owner_pid=ended.pid, owner_created=created)
    record.write_text(json.dumps(data))


def test_a_helper_is_running_once_it_is_ready_and_stops_with_its_node(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    process = start_daemon(
        "helper",
        ["sh", "-c", f"touch {marker}; exec sleep 30"],
        log_path=tmp_path / "helper.log",
        record=tmp_path / "helper.process.json",
        ready=marker.exists,
    )
    assert process.exit_status() is None
    assert not process.adopted
    assert os.getsid(process.pid) == process.pid  # its own session: outlives a killed node
    recorded = json.loads((tmp_path / "helper.process.json").read_text())
    assert (recorded["pid"], recorded["owner_pid"]) == (process.pid, os.getpid())
    process.stop()
    assert process.exit_status() == "exited with -15"
    assert not (tmp_path / "helper.process.json").exists()
    process.stop()  # stopping twice is harmless


def test_a_helper_that_exits_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(ProxyError, match=r"helper exited with 3: .*port 2053 is taken"):
        start_daemon(
            "helper",
            ["sh", "-c", "echo 'port 2053 is taken'; exit 3"],
            log_path=tmp_path / "helper.log",
            record=tmp_path / "helper.process.json",
            ready=lambda: False,
        )
    assert not (tmp_path / "helper.process.json").exists()  # nothing for a node to adopt


def test_a_helper_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    pids = tmp_path / "pid"
    with pytest.raises(ProxyError, match=r"helper did not answer within 0\.3 s"):
        start_daemon(
            "helper",
            ["sh", "-c", f"echo $$ > {pids}; exec sleep 30"],
            log_path=tmp_path / "helper.log",
            record=tmp_path / "helper.process.json",
            ready=lambda: False,
            within=0.3,
        )
    pid = int(pids.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "helper.process.json").exists()


def test_a_helper_whose_node_is_gone_is_adopted_and_stopped_by_the_next(tmp_path: Path) -> None:
    started = _sleeper(tmp_path)
    try:
        _gone_owner(started.record)
        adopted = adopt("helper", started.record)
        assert adopted is not None
        assert adopted.adopted
        assert adopted.pid == started.pid
        assert adopted.exit_status() is None
        # It is this process's now: a third node would leave it alone.
        assert json.loads(started.record.read_text())["owner_pid"] == os.getpid()
        assert adopt("helper", started.record) is None
        adopted.stop()
        assert adopted.exit_status() == "exited"
        assert not started.record.exists()
    finally:
        started.stop()


def test_a_helper_whose_node_still_runs_is_left_to_it(tmp_path: Path) -> None:
    started = _sleeper(tmp_path)  # its owner is this process, which still runs
    try:
        assert adopt("helper", started.record) is None
    finally:
        started.stop()


def test_a_record_of_a_helper_that_has_ended_or_whose_pid_was_reused_adopts_nothing(
    tmp_path: Path,
) -> None:
    started = _sleeper(tmp_path)
    _gone_owner(started.record)
    data = json.loads(started.record.read_text())
    # The same pid, started at another time: another process took the pid.
    started.record.write_text(json.dumps({**data, "created": data["created"] - 60}))
    assert adopt("helper", started.record) is None
    started.record.write_text(json.dumps(data))
    started.stop()
    started.record.write_text(json.dumps(data))
    assert adopt("helper", started.record) is None  # it has ended


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"pid": "one"}'])
def test_a_record_that_is_not_one_adopts_nothing(tmp_path: Path, text: str) -> None:
    record = tmp_path / "helper.process.json"
    record.write_text(text)
    assert adopt("helper", record) is None


def test_a_helper_is_recorded_before_it_is_ready(tmp_path: Path) -> None:
    """A node killed while it waits for its helper leaves a record the next one adopts by."""
    record = tmp_path / "helper.process.json"
    helper = start_daemon(
        "helper",
        ["sleep", "30"],
        log_path=tmp_path / "helper.log",
        record=record,
        ready=record.exists,  # ready only once recorded: a record after the wait never is
        within=2,
    )
    helper.stop()


def _readable(fd: int, within: float) -> bool:
    return bool(select.select([fd], [], [], within)[0])


@pytest.mark.parametrize("how", ["started", "adopted"])
def test_the_exit_of_a_helper_is_told_by_a_descriptor_that_becomes_readable(
    tmp_path: Path, how: str
) -> None:
    started = _sleeper(tmp_path)
    helper: Daemon | None = started
    if how == "adopted":
        _gone_owner(started.record)
        helper = adopt("helper", started.record)
    assert helper is not None
    watch = helper.exit_watch()
    assert watch is not None
    try:
        assert not _readable(watch, 0.2)  # it runs
        os.kill(helper.pid, signal.SIGKILL)
        assert _readable(watch, 30)  # told, whoever reaps it
        assert helper.exit_status() is not None
    finally:
        os.close(watch)
        started.stop()
        helper.stop()
    # Once forgotten, it has nothing left to watch; a watch taken before stays the caller's.
    assert helper.exit_watch() is None
