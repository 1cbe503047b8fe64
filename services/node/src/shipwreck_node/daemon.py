"""The helper processes a node starts beside it (Caddy, unbound): started in a session of
their own, so that they outlive a node that is killed (its apps stay reachable), and
stopped only by the node that started them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shipwreck_node.ports import ProxyError

__all__ = ["start_daemon", "stop_daemon"]


def start_daemon(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    within: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start ``argv``, its output appended to ``log_path``, and wait until ``ready()``;
    ProxyError with the log's tail if it exits first, or if it is not ready ``within``."""
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProxyError(
                f"{name} exited with {process.returncode}: "
                f"{log_path.read_text(errors='replace')[-800:]}"
            )
        if ready():
            return process
        time.sleep(0.1)
    stop_daemon(process)
    raise ProxyError(f"{name} did not answer within {within:g} s")


def stop_daemon(process: subprocess.Popen[bytes] | None) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
