"""Which database an application's events live in, as eventsourcing environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shipwreck_eventstore.mapper import MsgspecMapper
from shipwreck_runtime.secrets import redact_url

WRITER_AGGREGATE_CACHE = 10_000
"""Aggregates a writer service keeps in memory (:attr:`StoreConfig.aggregate_cache`)."""


class StoreConfigError(ValueError):
    """The database URL or state directory cannot be used."""


@dataclass(frozen=True)
class StoreConfig:
    """PostgreSQL when ``database_url`` names it, else one SQLite file per application.

    ``state_dir`` ``":memory:"`` keeps SQLite in memory (the in-memory twin for unit tests).
    ``aggregate_cache`` > 0 keeps that many aggregates in memory between commands and
    trusts them without asking the store for newer events: only for the one process that
    writes the application (DESIGN: one writer per aggregate type), where nothing else
    changes them. Reads then cost no round trip and no replay of a long history.
    """

    database_url: str | None = None
    state_dir: str = ".shipwreck"
    pool_size: int = 5
    max_overflow: int = 5
    aggregate_cache: int = 0

    def env_for(self, name: str) -> dict[str, str]:
        """The eventsourcing environment for the application called ``name``."""
        env = {
            "MAPPER_TOPIC": f"{MsgspecMapper.__module__}:{MsgspecMapper.__qualname__}",
            # Multi-row tracking: a consumer records every upstream position it handled,
            # so a redelivery is recognised even when messages arrive out of order.
            "SINGLE_ROW_TRACKING": "n",
        }
        if self.aggregate_cache > 0:
            env["AGGREGATE_CACHE_MAXSIZE"] = str(self.aggregate_cache)
            env["AGGREGATE_CACHE_FASTFORWARD"] = "n"
        if self.database_url:
            env.update(_postgres_env(self.database_url))
            env["POSTGRES_POOL_SIZE"] = str(self.pool_size)
            env["POSTGRES_MAX_OVERFLOW"] = str(self.max_overflow)
            return env
        env["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
        if self.state_dir == ":memory:":
            # A named shared-cache memory database, so every connection sees one store.
            env["SQLITE_DBNAME"] = f"file:{name}?mode=memory&cache=shared"
        else:
            directory = Path(self.state_dir)
            directory.mkdir(parents=True, exist_ok=True)
            env["SQLITE_DBNAME"] = str(directory / f"{name}.sqlite")
        env["SQLITE_LOCK_TIMEOUT"] = "10"
        return env

    @property
    def backend(self) -> str:
        """``postgres`` or ``sqlite``."""
        return "postgres" if self.database_url else "sqlite"


def _postgres_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise StoreConfigError(
            f"SHIPWRECK_DATABASE_URL has scheme {parts.scheme!r}; allowed: postgresql:// "
            "(leave it unset for SQLite files under SHIPWRECK_STATE_DIR)"
        )
    dbname = parts.path.lstrip("/")
    if not dbname:
        raise StoreConfigError(
            "SHIPWRECK_DATABASE_URL names no database; "
            "allowed: postgresql://user[:password]@host[:port]/dbname"
        )
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(dbname),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }
    return env


def redact(url: str | None) -> str:
    """A database URL safe to log (``sqlite`` when there is none)."""
    return redact_url(url) if url else "sqlite"
