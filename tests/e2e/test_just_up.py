"""`just up` starts all five services against RabbitMQ; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.infra, pytest.mark.slow]

SERVICES = ("api", "orchestrator", "scheduler", "watcher", "node")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(path: Path, predicate: object, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if predicate(text):  # type: ignore[operator]
            return text
        time.sleep(0.2)
    return text


def _descendants(pid: int) -> set[int]:
    children: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            child = int(status.parent.name)
            children |= {child} | _descendants(child)
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; it only waits for its parent to reap it


def _wait_gone(pids: set[int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {pid for pid in pids if _alive(pid)}
        if not alive:
            return {}
        time.sleep(0.2)
    return {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in alive}


def test_just_up_starts_every_service_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    env = {
        **os.environ,
        "SHIPWRECK_STATE_DIR": str(tmp_path / "state"),
        "SHIPWRECK_API_PORT": str(_free_port()),
        "SHIPWRECK_NODE_NAME": f"up-test-{os.getpid()}",
    }
    env.pop("SHIPWRECK_DATABASE_URL", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["just", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        text = _wait_for(log, lambda t: all(f"shipwreck.{s}: {s} ready" in t for s in SERVICES), 90)
        for service in SERVICES:
            assert f"shipwreck.{service}: {service} ready" in text, (
                f"{service} never logged that it is ready:\n{text[-3000:]}"
            )
        processes = _descendants(proc.pid)
        assert len(processes) >= len(SERVICES)

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        text = log.read_text(errors="replace")
        for service in SERVICES:
            assert f"shipwreck.{service}: {service} stopped" in text, (
                f"{service} did not stop cleanly:\n{text[-3000:]}"
            )
        still_running = _wait_gone(processes, 15)
        assert not still_running, f"processes left after SIGTERM: {still_running}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
