"""Event-store fixtures: the same tests run on SQLite files and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shipwreck_eventstore import StoreConfig
from tests.support.infra import POSTGRES_URL


def drop_postgres_tables(*app_names: str) -> None:
    """Drop what eventsourcing created for these application names."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for name in app_names:
            for suffix in ("events", "tracking", "snapshots"):
                conn.execute(f'DROP TABLE IF EXISTS "{name.lower()}_{suffix}" CASCADE')


class StoreFactory:
    """Hands out a StoreConfig per backend and cleans up the tables it used."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.used_names: list[str] = []

    def config(self) -> StoreConfig:
        if self.backend == "postgres":
            return StoreConfig(database_url=POSTGRES_URL, pool_size=2, max_overflow=2)
        return StoreConfig(state_dir=str(self.tmp_path / "state"))

    def name(self, prefix: str) -> str:
        import uuid

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.used_names.append(name)
        return name


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    if factory.backend == "postgres":
        drop_postgres_tables(*factory.used_names)
