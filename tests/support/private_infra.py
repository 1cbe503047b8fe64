"""A RabbitMQ node and a PostgreSQL cluster of the test's own, that it may restart.

The fault suite restarts the broker and the database on purpose; doing that to the
machine's shared servers would break whatever else runs on them. Both run from the
Debian packages already installed (``rabbitmq-server``, ``postgresql-15``), on free ports,
with their data under a directory of the test's, and are stopped by the PIDs started here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.gitdaemon import free_port


def _wait(predicate: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up within {seconds}s")


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        raise AssertionError("no PostgreSQL server under /usr/lib/postgresql (package postgresql)")
    return versions[-1].parent


@dataclass
class PrivatePostgres:
    """One PostgreSQL cluster on 127.0.0.1:``port``, owned by the ``postgres`` user."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        # PostgreSQL refuses to run as root; CI runs as root.
        command = [*args] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        bin_dir = _postgres_bin()
        if not self.data.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            self._as_postgres(
                str(bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
            )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off -c full_page_writes=off"
        )
        self._as_postgres(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        _wait(self._answers, "PostgreSQL", 60)

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self, mode: str = "fast") -> None:
        """``mode`` "immediate" is a crash: no checkpoint, clients cut off at once."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(
                str(_postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
            )

    def restart(self, down_seconds: float, mode: str = "immediate") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()


@dataclass
class PrivateRabbit:
    """One RabbitMQ node on 127.0.0.1:``port``, named so it never meets the machine's own."""

    root: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"shipwreck-faults-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.root / "rabbitmq.pid"),
        )
        return env

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, *args],
            capture_output=True,
            timeout=60,
            env=self._env(),
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        return done.stdout.decode()

    def _answers(self) -> bool:
        try:
            self.ctl("await_startup", "--timeout", "5")
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def start(self) -> None:
        if not self.root.exists():
            self.root.mkdir(parents=True)
            (self.root / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            )
            # No management or prometheus plugin: their ports would clash with the machine's.
            (self.root / "enabled_plugins").write_text("[].\n")
            if os.geteuid() == 0:
                # rabbitmq-server switches to the rabbitmq user when started as root.
                subprocess.run(["chown", "-R", "rabbitmq:", str(self.root)], check=True)
        with (self.root / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                ["rabbitmq-server"],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(self._answers, "RabbitMQ", 90)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.ctl("stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
