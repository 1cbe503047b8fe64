"""``python -m shipwreck_api``: serve GraphQL over HTTP and websockets."""

from __future__ import annotations

import sys

import uvicorn

from shipwreck_api.app import create_app
from shipwreck_api.direct import FrameWebSocketProtocol
from shipwreck_api.settings import ApiSettings
from shipwreck_runtime import configure_logging, load_settings_or_exit


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
    try:
        uvicorn.Server(config).run()
    except (ConnectionError, OSError) as e:
        log.error("api cannot start: %s. Is RabbitMQ running (`rabbitmq-server -detached`)?", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
