"""Suite-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # FastStream and aio-pika run on asyncio; trio is not a target.
    return "asyncio"
