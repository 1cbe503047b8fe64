"""``python -m shipwreck_api``: serve GraphQL over HTTP and websockets."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from shipwreck_api.app import create_app
from shipwreck_api.direct import FrameWebSocketProtocol
from shipwreck_api.settings import ApiSettings
from shipwreck_runtime import configure_logging, freeze_startup_heap, load_settings_or_exit


class _Server(uvicorn.Server):
    """uvicorn's server, saying "api ready" once its socket listens.

    The app's own startup (broker, live feed) runs before uvicorn binds the socket, so a
    client that connected on the app's word could be refused.
    """

    def __init__(self, config: uvicorn.Config, log: logging.Logger) -> None:
        super().__init__(config)
        self.log = log

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.log.info("api ready: http://%s:%d/graphql", self.config.host, self.config.port)


def main() -> int:
    """Load settings from the environment and serve until SIGINT/SIGTERM."""
    settings = load_settings_or_exit(ApiSettings, "shipwreck-api")
    log = configure_logging("api", settings.log_level)
    app = create_app(settings, logger=log)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        # uvicorn's "websockets-sansio", which also takes pre-framed updates (direct).
        ws=FrameWebSocketProtocol,
        # Updates are small JSON frames sent to many subscribers: compressing each one for
        # each subscriber costs more CPU than the bytes it saves.
        ws_per_message_deflate=False,
        lifespan="on",
    )
    server = _Server(config, log)
    freeze_startup_heap(log)
    try:
        server.run()
    except (ConnectionError, OSError) as e:
        log.error("api cannot start: %s. Is RabbitMQ running (`rabbitmq-server -detached`)?", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
