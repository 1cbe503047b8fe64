"""Suite-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # FastStream and aio-pika run on asyncio; trio is not a target.
    return "asyncio"


# Shared fixtures of the integration and end-to-end suites.
from tests.support.gitdaemon import git_server  # noqa: E402
from tests.support.platform import platform  # noqa: E402

__all__ = ["anyio_backend", "git_server", "platform"]
