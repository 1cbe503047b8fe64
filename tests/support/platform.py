"""An isolated platform for integration tests: its own RabbitMQ vhost and PostgreSQL database,
and helpers to run the real services as processes against them."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.support.infra import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


class _Vhosts:
    """RabbitMQ vhosts for tests, made several at a time and removed in the background.

    Every rabbitmqctl call boots an Erlang VM (0.7-0.9 s of CPU here), and a platform took
    three: add, permit, delete. One `import_definitions` makes a batch with their
    permissions, and a deletion runs beside the next test; the run waits for the last ones
    at its end, so no vhost (with its quorum queues) outlives it.
    """

    BATCH = 6

    def __init__(self) -> None:
        self._ready: list[str] = []
        self._deleting: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._registered = False

    def take(self) -> str:
        if not self._ready:
            names = [f"shipwreck-test-{uuid.uuid4().hex[:10]}" for _ in range(self.BATCH)]
            permission = {"user": "guest", "configure": ".*", "write": ".*", "read": ".*"}
            definitions = {
                "vhosts": [{"name": name} for name in names],
                "permissions": [{**permission, "vhost": name} for name in names],
            }
            # On stdin: Debian's rabbitmqctl runs as the rabbitmq user, who may not read
            # this process's temporary files. The import is done when the call returns.
            subprocess.run(
                ["rabbitmqctl", "-q", "import_definitions"],
                input=json.dumps(definitions).encode(),
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._ready = names
            if not self._registered:
                atexit.register(self.close)
                self._registered = True
        return self._ready.pop()

    def give_back(self, name: str) -> None:
        self._reap(wait=False)
        self._deleting.append(
            (
                name,
                subprocess.Popen(
                    ["rabbitmqctl", "-q", "delete_vhost", name],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                ),
            )
        )

    def _reap(self, *, wait: bool) -> None:
        going = []
        for name, process in self._deleting:
            if wait:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.poll() is None:
                going.append((name, process))
                continue
            if process.returncode != 0:
                assert process.stderr is not None
                print(
                    f"could not delete the test vhost {name}: {process.stderr.read().decode()}",
                    file=sys.stderr,
                )
            if process.stderr is not None:
                process.stderr.close()
        self._deleting = going

    def close(self) -> None:
        """Delete the vhosts not handed out, and wait for every deletion."""
        for name in self._ready:
            self.give_back(name)
        self._ready = []
        self._reap(wait=True)


_VHOSTS = _Vhosts()


@dataclass(frozen=True)
class _Starting:
    """A service process started and not yet known to be ready."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    offset: int
    ready: str
    deadline: float


@dataclass
class Platform:
    """Addresses of one isolated platform, and the service processes started on it."""

    amqp_url: str
    database_url: str
    state_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_ids: list[str] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)
    _starting: list[_Starting] | None = field(default=None, repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a service process runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
        env.update(
            SHIPWRECK_AMQP_URL=self.amqp_url,
            SHIPWRECK_DATABASE_URL=self.database_url,
            SHIPWRECK_STATE_DIR=str(self.state_dir),
            SHIPWRECK_GIT_ALLOW_PRIVATE="true",
        )
        env.update(extra)
        return env

    def start(
        self, name: str, module: str, ready: str, *, timeout: float = 60, **extra: str
    ) -> subprocess.Popen[bytes]:
        """Run ``python -m module`` and wait until its log says ``ready`` (inside
        :meth:`concurrently`, the wait comes at the end of the block)."""
        if module == "shipwreck_node":
            node_name = extra.get("SHIPWRECK_NODE_NAME") or socket.gethostname()
            self.node_ids.append(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"node.shipwreck/{node_name}")))
        log = self.state_dir / f"{name}.log"
        # A restarted service appends to its log: only what this start writes counts.
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=self.env(**extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = proc
        self.logs[name] = log
        starting = _Starting(name, proc, log, offset, ready, time.monotonic() + timeout)
        if self._starting is not None:
            self._starting.append(starting)
        else:
            self._wait_ready(starting)
        return proc

    @contextlib.contextmanager
    def concurrently(self) -> Iterator[None]:
        """Services started in the block start side by side (each start is mostly imports,
        on one core); the block ends once every one of them is ready."""
        self._starting = []
        try:
            yield
            for starting in self._starting:
                self._wait_ready(starting)
        finally:
            self._starting = None

    def _wait_ready(self, starting: _Starting) -> None:
        name, proc = starting.name, starting.process
        while time.monotonic() < starting.deadline:
            with starting.log.open("rb") as f:
                f.seek(starting.offset)
                written = f.read().decode(errors="replace")
            if starting.ready in written:
                return
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{name} did not become ready:\n{self.log_tail(name)}")

    def stop(self, name: str) -> None:
        """SIGTERM a service and wait for it."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of a service's log, for failure messages."""
        return self.logs[name].read_text(errors="replace")[-chars:]

    def log_tails(self, chars: int = 4000) -> str:
        """The end of every service's log, for a failed test's report."""
        return "\n".join(
            f"--- the end of {name}'s log ({log}) ---\n{self.log_tail(name, chars)}"
            for name, log in self.logs.items()
        )

    def stop_all(self) -> None:
        """Stop every service started here, then remove the app containers of its nodes
        (apps outlive their node by design; a test's must not outlive the test)."""
        for name in list(self.processes):
            self.stop(name)
        remove_node_containers(self.node_ids)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A fresh vhost and database for one test, removed afterwards."""
    with isolated_platform(tmp_path) as p:
        yield p


@contextlib.contextmanager
def isolated_platform(root: Path) -> Iterator[Platform]:
    """A fresh vhost and database (state under ``root``) until the block ends: for tests
    that share one running platform (a module-scoped fixture)."""
    vhost = _VHOSTS.take()
    dbname = f"shipwreck_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    state = root / "platform"
    state.mkdir()
    p = Platform(
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        database_url=f"{base}/{dbname}",
        state_dir=state,
    )
    try:
        yield p
    finally:
        p.stop_all()
        _VHOSTS.give_back(vhost)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def service_env(values: Mapping[str, str]) -> dict[str, str]:
    """``SHIPWRECK_*`` settings as keyword arguments for :meth:`Platform.start`."""
    return {f"SHIPWRECK_{k.upper()}": v for k, v in values.items()}


def remove_node_containers(node_ids: list[str]) -> None:
    """Remove every container labelled as run by one of ``node_ids``."""
    if not node_ids:
        return
    import docker

    client = docker.from_env()
    try:
        for node_id in node_ids:
            for container in client.containers.list(
                all=True, filters={"label": f"org.shipwreck.node={node_id}"}
            ):
                container.remove(force=True)
    finally:
        client.close()
