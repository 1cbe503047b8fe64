"""``python -m shipwreck_node``: run a worker node."""

from __future__ import annotations

import sys

from shipwreck_messaging.service import run_service
from shipwreck_node.app import create_app
from shipwreck_node.ports import RuntimeFailure
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import configure_logging, load_settings


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings(NodeSettings)
    log = configure_logging("node", settings.log_level)
    try:
        app = create_app(settings, logger=log)
    except RuntimeFailure as e:
        # A node without Docker can do nothing: say so instead of showing a traceback.
        log.error("%s. Start dockerd, or point DOCKER_HOST at a running engine.", e)
        return 2
    return run_service(app, "node", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
