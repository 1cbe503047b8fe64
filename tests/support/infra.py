"""Addresses of the real infrastructure the integration tests run against."""

from __future__ import annotations

import os
import uuid

AMQP_URL = os.environ.get("SHIPWRECK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "SHIPWRECK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def unique(prefix: str) -> str:
    """A name no other test run uses (queues, tables, applications)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
