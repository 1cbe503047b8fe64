"""Fixtures of the fault suite: a broker and a database of its own, that it may restart."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.platform import ROOT, Platform, remove_node_containers
from tests.support.private_infra import PrivatePostgres, PrivateRabbit


@pytest.fixture
def private_root() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is private to root, and the servers run as the
    # postgres and rabbitmq users.
    root = Path(tempfile.mkdtemp(prefix="shipwreck-faults-"))
    os.chmod(root, 0o755)  # noqa: S103 - nothing secret in it; the servers must enter it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def rabbit(private_root: Path) -> Iterator[PrivateRabbit]:
    server = PrivateRabbit(private_root / "rabbitmq")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(private_root: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(private_root / "postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


@pytest.fixture
def faulty_platform(rabbit: PrivateRabbit, postgres: PrivatePostgres) -> Iterator[Platform]:
    """A platform on the private broker and database (their restarts hurt nobody else)."""
    # The last run's logs stay in the project for reading after a failure.
    state = ROOT / ".faults" / "platform"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    platform = Platform(amqp_url=rabbit.url, database_url=postgres.url, state_dir=state)
    try:
        yield platform
    finally:
        platform.stop_all()
        remove_node_containers(platform.node_ids)
