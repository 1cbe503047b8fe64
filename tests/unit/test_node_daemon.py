"""The node's helper processes (Caddy, unbound): started until ready, or a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipwreck_node.daemon import start_daemon, stop_daemon
from shipwreck_node.ports import ProxyError


def test_a_helper_is_running_once_it_is_ready_and_stops_with_its_node(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    process = start_daemon(
        "helper",
        ["sh", "-c", f"touch {marker}; exec sleep 30"],
        log_path=tmp_path / "helper.log",
        ready=marker.exists,
    )
    assert process.poll() is None
    assert os.getsid(process.pid) == process.pid  # its own session: outlives a killed node
    stop_daemon(process)
    assert process.poll() is not None
    stop_daemon(process)  # stopping twice is harmless


def test_a_helper_that_exits_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(ProxyError, match=r"helper exited with 3: .*port 2053 is taken"):
        start_daemon(
            "helper",
            ["sh", "-c", "echo 'port 2053 is taken'; exit 3"],
            log_path=tmp_path / "helper.log",
            ready=lambda: False,
        )


def test_a_helper_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    pids = tmp_path / "pid"
    with pytest.raises(ProxyError, match=r"helper did not answer within 0\.3 s"):
        start_daemon(
            "helper",
            ["sh", "-c", f"echo $$ > {pids}; exec sleep 30"],
            log_path=tmp_path / "helper.log",
            ready=lambda: False,
            within=0.3,
        )
    pid = int(pids.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
