"""Settings load once from SHIPWRECK_* variables; a bad value stops a service at start with
one line naming the variable, the value and what is allowed (exit status 2, no traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from shipwreck_runtime import (
    Count,
    LogLevel,
    Port,
    PositiveSeconds,
    Seconds,
    SettingsError,
    load_settings,
    load_settings_or_exit,
)
from shipwreck_runtime.secrets import redact_url


class Example(msgspec.Struct, frozen=True, kw_only=True):
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    api_port: int = 8080
    watch: bool = True
    database_url: str | None = None
    log_level: LogLevel = "INFO"
    ledger_entries: Count = 1000
    node_timeout_seconds: PositiveSeconds = 10.0
    drain_seconds: Seconds = 2.0
    https_port: Port | None = None
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1


def test_unset_variables_keep_the_defaults() -> None:
    assert load_settings(Example, {}) == Example()


def test_values_are_converted_from_text() -> None:
    settings = load_settings(
        Example,
        {
            "SHIPWRECK_API_PORT": "9090",
            "SHIPWRECK_WATCH": "false",
            "SHIPWRECK_DATABASE_URL": "postgresql://db/x",
            "SHIPWRECK_LOG_LEVEL": "debug",
            "SHIPWRECK_DRAIN_SECONDS": "0",
            "SHIPWRECK_HTTPS_PORT": "8443",
            "UNRELATED": "1",
        },
    )
    assert settings == Example(
        api_port=9090,
        watch=False,
        database_url="postgresql://db/x",
        log_level="debug",
        drain_seconds=0.0,
        https_port=8443,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SHIPWRECK_LEDGER_ENTRIES",
            "0",
            "SHIPWRECK_LEDGER_ENTRIES=0 is not allowed: it must be at least 1",
        ),
        (
            "SHIPWRECK_LEDGER_ENTRIES",
            "1.5",
            "SHIPWRECK_LEDGER_ENTRIES=1.5 is not allowed: it must be a whole number of at least 1",
        ),
        (
            "SHIPWRECK_API_PORT",
            "eighty",
            "SHIPWRECK_API_PORT=eighty is not allowed: it must be a whole number",
        ),
        (
            "SHIPWRECK_NODE_TIMEOUT_SECONDS",
            "abc",
            "SHIPWRECK_NODE_TIMEOUT_SECONDS=abc is not allowed: it must be a number greater than 0",
        ),
        (
            "SHIPWRECK_NODE_TIMEOUT_SECONDS",
            "0",
            "SHIPWRECK_NODE_TIMEOUT_SECONDS=0 is not allowed: it must be greater than 0",
        ),
        (
            "SHIPWRECK_NODE_TIMEOUT_SECONDS",
            "",
            "SHIPWRECK_NODE_TIMEOUT_SECONDS='' is not allowed: it must be a number greater than 0",
        ),
        (
            "SHIPWRECK_DRAIN_SECONDS",
            "-1",
            "SHIPWRECK_DRAIN_SECONDS=-1 is not allowed: it must be at least 0",
        ),
        ("SHIPWRECK_JITTER", "2", "SHIPWRECK_JITTER=2 is not allowed: it must be from 0 to 1"),
        (
            "SHIPWRECK_HTTPS_PORT",
            "0",
            "SHIPWRECK_HTTPS_PORT=0 is not allowed: it must be from 1 to 65535, or unset",
        ),
        (
            "SHIPWRECK_WATCH",
            "yes",
            "SHIPWRECK_WATCH=yes is not allowed: it must be true or false (or 1 or 0)",
        ),
        (
            "SHIPWRECK_LOG_LEVEL",
            "loud",
            "SHIPWRECK_LOG_LEVEL=loud is not allowed: "
            "it must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)",
        ),
        (
            "SHIPWRECK_LOG_LEVEL",
            "very loud",
            "SHIPWRECK_LOG_LEVEL='very loud' is not allowed: "
            "it must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)",
        ),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(Example, {variable: value})
    assert str(refused.value) == message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_numbers_must_be_finite(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(Example, {"SHIPWRECK_NODE_TIMEOUT_SECONDS": value})
    assert str(refused.value) == (
        f"SHIPWRECK_NODE_TIMEOUT_SECONDS={value} is not allowed: it must be a number greater than 0"
    )


def test_an_entry_point_exits_with_status_2_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPWRECK_LEDGER_ENTRIES", "0")
    with pytest.raises(SystemExit) as exited:
        load_settings_or_exit(Example, "shipwreck-test")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "shipwreck-test: SHIPWRECK_LEDGER_ENTRIES=0 is not allowed: it must be at least 1\n"
    )


def test_passwords_are_redacted_from_urls() -> None:
    assert redact_url("amqp://guest:s3cret@mq:5672/") == "amqp://guest:***@mq:5672/"
    assert redact_url("postgresql://db/x") == "postgresql://db/x"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port standing in for RabbitMQ and PostgreSQL: a service that got as far
    as connecting would show up in its backlog."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def _connected(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize(
    ("service", "variable", "value", "message"),
    [
        ("api", "SHIPWRECK_LEDGER_ENTRIES", "0", "it must be at least 1"),
        (
            "orchestrator",
            "SHIPWRECK_LOG_LEVEL",
            "loud",
            "it must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)",
        ),
        (
            "scheduler",
            "SHIPWRECK_NODE_TIMEOUT_SECONDS",
            "abc",
            "it must be a number greater than 0",
        ),
        ("watcher", "SHIPWRECK_WATCH_CONCURRENCY", "0", "it must be at least 1"),
        ("node", "SHIPWRECK_PROXY_HTTP_PORT", "0", "it must be from 1 to 65535"),
    ],
)
def test_a_service_with_a_bad_setting_exits_with_status_2_before_connecting(
    service: str,
    variable: str,
    value: str,
    message: str,
    tmp_path: Path,
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(
        SHIPWRECK_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/",
        SHIPWRECK_DATABASE_URL=f"postgresql://shipwreck@127.0.0.1:{port}/shipwreck",
        SHIPWRECK_STATE_DIR=str(tmp_path / "state"),
        SHIPWRECK_WORK_DIR=str(tmp_path / "work"),
        DOCKER_HOST=f"tcp://127.0.0.1:{port}",
    )
    env[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", f"shipwreck_{service}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"shipwreck-{service}: {variable}={value} is not allowed: {message}\n"
    assert not _connected(listener)
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "work").exists()


def test_a_database_url_of_another_scheme_stops_a_store_service_without_its_password(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(
        SHIPWRECK_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/",
        SHIPWRECK_DATABASE_URL=f"mysql://shipwreck:s3cret@127.0.0.1:{port}/shipwreck",
    )
    done = subprocess.run(
        [sys.executable, "-m", "shipwreck_watcher"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("shipwreck-watcher: SHIPWRECK_DATABASE_URL has scheme 'mysql'")
    assert len(done.stderr.splitlines()) == 1
    assert "s3cret" not in done.stderr
    assert not _connected(listener)
