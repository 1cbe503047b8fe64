"""Bearer-token authentication: no valid token, no GraphQL (HTTP 401)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler


def resolve_token(configured: str | None, state_dir: str) -> tuple[str, str]:
    """The admin token and where it came from (never the token itself, for logs)."""
    if configured:
        return configured, "SHIPWRECK_API_TOKEN"
    path = Path(state_dir) / "api-token"
    if path.exists():
        return path.read_text().strip(), str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Created 0600 from the start: the token is never readable by other users.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


def bearer_guard(token: str):  # type: ignore[no-untyped-def]
    """A Litestar guard accepting only ``Authorization: Bearer <token>``."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        scheme, _sep, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
            raise NotAuthorizedException(
                "missing or invalid bearer token: send `Authorization: Bearer <token>` "
                "(the token is SHIPWRECK_API_TOKEN, or the api-token file the api logged)"
            )

    return guard
