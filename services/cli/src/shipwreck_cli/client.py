"""Talking to the Shipwreck API: GraphQL over HTTP (httpx) and graphql-transport-ws (websockets).

Every failure becomes a :class:`CliError` whose message tells the user what to do; no
traceback reaches the terminal for an API that is down or a token that is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

DEFAULT_API_URL = "http://127.0.0.1:8080"
GRAPHQL_TRANSPORT_WS = Subprotocol("graphql-transport-ws")


class CliError(Exception):
    """A failure to report in one sentence, with the exit code to end with."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotFoundError(CliError):
    """The API says the deployment or app asked about does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


class SubscriptionLost(CliError):
    """The websocket closed before the subscription completed (the caller may poll)."""


def resolve_token(
    given: str | None, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """The token from ``--token``, ``SHIPWRECK_API_TOKEN``, or the api's token file."""
    env = os.environ if environ is None else environ
    if given:
        return given
    if env.get("SHIPWRECK_API_TOKEN"):
        return env["SHIPWRECK_API_TOKEN"]
    state_dir = Path(env.get("SHIPWRECK_STATE_DIR", ".shipwreck"))
    path = state_dir if state_dir.is_absolute() else (cwd or Path.cwd()) / state_dir
    token_file = path / "api-token"  # where the api writes the token it generates
    if token_file.is_file():
        token = token_file.read_text().strip()
        if token:
            return token
    raise CliError(
        "no API token: pass --token, set SHIPWRECK_API_TOKEN, or run where the api keeps "
        f"its token ({token_file})"
    )


def _websocket_url(api_url: str) -> str:
    parts = urlsplit(api_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, _graphql_path(parts.path), "", ""))


def _graphql_path(path: str) -> str:
    path = path.rstrip("/")
    return path if path.endswith("/graphql") else f"{path}/graphql"


@dataclass
class ApiClient:
    """One API endpoint and its bearer token."""

    api_url: str
    token: str
    timeout: float = 10.0

    @property
    def graphql_url(self) -> str:
        """Where GraphQL requests go."""
        parts = urlsplit(self.api_url)
        return urlunsplit((parts.scheme, parts.netloc, _graphql_path(parts.path), "", ""))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        """Run a query or mutation; its ``data``, or a :class:`CliError` saying what failed."""
        payload = {"query": query, "variables": dict(variables or {})}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.post(self.graphql_url, json=payload, headers=self._headers())
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        if response.status_code in (401, 403):
            raise self._refused(response.status_code)
        if response.status_code != 200:
            raise CliError(
                f"the API at {self.api_url} answered HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            answer = response.json()
        except json.JSONDecodeError:
            raise CliError(f"the API at {self.api_url} did not answer JSON") from None
        _raise_errors(answer)
        return answer.get("data")

    async def subscribe(
        self, query: str, variables: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        """The ``data`` of each item of a subscription, until the server completes it."""
        try:
            async with connect(
                _websocket_url(self.api_url),
                subprotocols=[GRAPHQL_TRANSPORT_WS],
                additional_headers=self._headers(),
                open_timeout=self.timeout,
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "connection_ack":
                        break
                    if message.get("type") == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                payload = {"query": query, "variables": dict(variables or {})}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
                while True:
                    message = json.loads(await ws.recv())
                    kind = message.get("type")
                    if kind == "next":
                        _raise_errors(message.get("payload", {}))
                        yield message["payload"].get("data")
                    elif kind == "error":
                        _raise_errors({"errors": message.get("payload") or []})
                    elif kind == "complete":
                        return
                    elif kind == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                raise self._refused(status) from None
            raise CliError(
                f"the API at {self.api_url} refused the websocket: HTTP {status}"
            ) from None
        except ConnectionClosed as e:
            raise SubscriptionLost(f"the API closed the subscription: {e}") from None
        except (OSError, TimeoutError, WebSocketException) as e:
            raise self._unreachable(e) from None

    def _unreachable(self, error: Exception) -> CliError:
        reason = str(error) or type(error).__name__
        return CliError(
            f"cannot reach the Shipwreck API at {self.api_url} ({reason}); is it running "
            "(`just up`)? Point --api-url or SHIPWRECK_API_URL at it."
        )

    def _refused(self, status: int) -> CliError:
        return CliError(
            f"the API at {self.api_url} refused the token (HTTP {status}): check --token or "
            "SHIPWRECK_API_TOKEN (the api writes its generated token to .shipwreck/api-token)"
        )


def _raise_errors(answer: Mapping[str, Any]) -> None:
    errors = answer.get("errors") or []
    if not errors:
        return
    messages = [str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors]
    codes = {e.get("extensions", {}).get("code") for e in errors if isinstance(e, Mapping)}
    text = "; ".join(messages)
    if codes == {"NOT_FOUND"}:
        raise NotFoundError(text)
    raise CliError(text)
