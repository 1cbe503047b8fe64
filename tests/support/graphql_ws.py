"""A graphql-transport-ws client over a real websocket, for tests against an api process."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol


async def subscribe(
    url: str, token: str, query: str, *, max_queue: int | None = 16, **variables: Any
) -> ClientConnection:
    """Connect to ``url`` (``ws://.../graphql``) with ``token``, and start one subscription
    (operation id "1"). ``max_queue=1``: a client that stops reading stops reading its
    socket too."""
    ws = await connect(
        url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        additional_headers={"Authorization": f"Bearer {token}"},
        max_queue=max_queue,
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    payload = {"query": query, "variables": variables}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws
