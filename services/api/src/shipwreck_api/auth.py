"""Bearer-token authentication: no valid token, no GraphQL (HTTP 401), nothing published."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Scope

ADMIN = "admin"
"""The name of the first admin token: the actor recorded for what it asks."""

_ACTOR_KEY = "shipwreck.actor"


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


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def bearer_guard(tokens: Mapping[str, str]) -> Guard:
    """A Litestar guard accepting only ``Authorization: Bearer <token>`` for a known token.

    ``tokens`` maps each token to its name; the name becomes the connection's actor.
    """

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        header = connection.headers.get("authorization", "")
        scheme, _sep, given = header.partition(" ")
        name = _match(given.strip(), tokens) if scheme.lower() == "bearer" else None
        if name is None:
            raise NotAuthorizedException(
                "missing or invalid bearer token: send `Authorization: Bearer <token>` "
                "(the token is SHIPWRECK_API_TOKEN, or the api-token file the api logged)"
            )
        connection.scope.setdefault("state", {})[_ACTOR_KEY] = name

    return guard


def _match(given: str, tokens: Mapping[str, str]) -> str | None:
    found = None
    # Compare with every token, in constant time each, so timing tells nothing.
    for token, name in tokens.items():
        if hmac.compare_digest(given.encode(), token.encode()):
            found = name
    return found


def actor_of(scope: Scope) -> str:
    """The name of the token that authenticated this connection (set by the guard)."""
    state: Mapping[str, Any] = scope.get("state", {})
    actor = state.get(_ACTOR_KEY)
    if not isinstance(actor, str):
        raise NotAuthorizedException("the connection was not authenticated")
    return actor
