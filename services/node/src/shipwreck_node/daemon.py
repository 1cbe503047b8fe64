"""The helper processes a node runs beside it (Caddy, unbound).

They are started in a session of their own, so that they outlive a node that is killed
(its apps stay reachable). The node that started one supervises it: it starts it again if it
exits, and stops it when the node stops. Each start is recorded in a small file in the
node's state directory: the helper's pid and the node's, each with its start time. A node
that starts on that state directory after one was killed finds the helper answering, and
the record shows that its owner is gone: it adopts the helper and supervises it from then on.
A helper whose owner still runs (another node object on the same directory), or that no
record names, is left to whoever runs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from shipwreck_node.ports import ProxyError

__all__ = ["Daemon", "adopt", "has_exited", "start_daemon"]

log = logging.getLogger(__name__)

# psutil derives a start time from clock ticks since boot: the same process always reads
# the same, a reused pid reads another (ticks are 10 ms apart).
_SAME_START = 0.005


def has_exited(process: psutil.Process) -> bool:
    """Whether ``process`` has exited, reaped or not.

    A zombie counts once its other threads have exited too: the main thread of a threaded
    process (Caddy is written in Go) is a zombie while the rest still exit, holding the
    process's sockets, and its parent cannot reap it yet.
    """
    try:
        return process.status() == psutil.STATUS_ZOMBIE and process.num_threads() <= 1
    except psutil.NoSuchProcess:
        return True


def _alive(pid: object, created: object) -> psutil.Process | None:
    """The process ``pid`` if it still is the one that started at ``created``."""
    if not isinstance(pid, int) or not isinstance(created, int | float):
        return None
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > _SAME_START:
            return None  # the pid was reused
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return None if has_exited(process) else process


def _pidfd(pid: int) -> int | None:
    """A descriptor of process ``pid`` that becomes readable once it has exited, or None
    where the kernel gives none (or the process is gone already)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class Daemon:
    """A helper process this node supervises: one it started (its child), or one that a node
    killed before it started on the same state directory, adopted from its record."""

    def __init__(
        self,
        name: str,
        process: psutil.Process,
        record: Path,
        child: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.name = name
        self.process = process
        self.record = record
        self.child = child
        # Held for as long as the node supervises it: it names this process, and no other
        # that may get its pid once it is gone.
        self._exit_fd = _pidfd(process.pid)
        self._exit_fd_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def adopted(self) -> bool:
        return self.child is None

    def write_record(self) -> None:
        """Record this helper as the current process's, for a node started after it."""
        owner = psutil.Process()
        record = {
            "pid": self.pid,
            "created": self.process.create_time(),
            "owner_pid": owner.pid,
            "owner_created": owner.create_time(),
        }
        new = self.record.with_name(self.record.name + ".new")
        new.write_text(json.dumps(record) + "\n")
        new.replace(self.record)

    def exit_status(self) -> str | None:
        """None while it runs; else how it ended (the code is known only for a child)."""
        if self.child is not None:
            code = self.child.poll()
            return None if code is None else f"exited with {code}"
        # is_running: psutil's own check that the pid still is this process (not reused).
        if self.process.is_running() and not has_exited(self.process):
            return None
        return "exited"

    def exit_watch(self) -> int | None:
        """A new descriptor that becomes readable once this helper has exited (the caller
        closes it), so that the node learns of an exit at once; None where the kernel has
        none to give (the node's periodic look at `exit_status` still finds it)."""
        with self._exit_fd_lock:
            return None if self._exit_fd is None else os.dup(self._exit_fd)

    def stop(self, within: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``within`` seconds; forget its record."""
        for signal_it in (self.process.terminate, self.process.kill):
            if self.exit_status() is not None:
                break
            with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
                signal_it()
            self._wait(within)
        self.forget()

    def _wait(self, within: float) -> None:
        # Not psutil's wait: a helper that is not this node's child stays a zombie until
        # its new parent reaps it (up to a second or two in some containers), and psutil
        # waits for that; an exited zombie has ended, as far as the node is concerned.
        deadline = time.monotonic() + within
        while self.exit_status() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def forget(self) -> None:
        """Stop supervising it: remove the record if it still names this process (a later
        start rewrites it)."""
        with self._exit_fd_lock:
            if self._exit_fd is not None:
                os.close(self._exit_fd)
                self._exit_fd = None
        try:
            recorded = json.loads(self.record.read_text())
        except (FileNotFoundError, ValueError):
            return
        if isinstance(recorded, dict) and recorded.get("pid") == self.pid:
            self.record.unlink(missing_ok=True)


def start_daemon(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    record: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    within: float = 15.0,
) -> Daemon:
    """Start ``argv``, its output appended to ``log_path``, wait until ``ready()``, and
    record it in ``record``; ProxyError with the log's tail if it exits first, or if it
    is not ready ``within`` seconds (it is then stopped)."""
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    daemon = Daemon(name, psutil.Process(child.pid), record, child)
    # Recorded at once: a node killed while it waits leaves a helper the next one adopts.
    daemon.write_record()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if child.poll() is not None:
            daemon.forget()
            raise ProxyError(
                f"{name} exited with {child.returncode}: "
                f"{log_path.read_text(errors='replace')[-800:]}"
            )
        if ready():
            return daemon
        time.sleep(0.1)
    daemon.stop()
    raise ProxyError(f"{name} did not answer within {within:g} s")


def adopt(name: str, record: Path) -> Daemon | None:
    """The helper that ``record`` names, if it still runs and the node that started it
    does not (a node killed before this one started); else None."""
    try:
        recorded = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    if _alive(recorded.get("owner_pid"), recorded.get("owner_created")) is not None:
        return None  # its owner runs and supervises it
    process = _alive(recorded.get("pid"), recorded.get("created"))
    if process is None:
        return None
    daemon = Daemon(name, process, record)
    daemon.write_record()  # this node's from now on
    log.info("adopted %s (pid %d), left running by a node that is gone", name, daemon.pid)
    return daemon
