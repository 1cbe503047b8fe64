"""Settings every service shares."""

from __future__ import annotations

import msgspec

from shipwreck_runtime.settings import LogLevel

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class CommonSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``SHIPWRECK_AMQP_URL``, ``SHIPWRECK_LOG_LEVEL`` (a :mod:`logging` level, any case)."""

    amqp_url: str = DEFAULT_AMQP_URL
    log_level: LogLevel = "INFO"


class StoreSettings(CommonSettings, frozen=True, kw_only=True):
    """Plus the event store: ``SHIPWRECK_DATABASE_URL`` (PostgreSQL) or SQLite files."""

    database_url: str | None = None
    state_dir: str = ".shipwreck"
