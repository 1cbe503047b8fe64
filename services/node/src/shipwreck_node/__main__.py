"""``python -m shipwreck_node``: run a worker node."""

from __future__ import annotations

import sys

from shipwreck_messaging.service import run_service
from shipwreck_node.app import create_app
from shipwreck_node.ports import ProxyError, RuntimeFailure
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import configure_logging, load_settings_or_exit


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings_or_exit(NodeSettings, "shipwreck-node")
    log = configure_logging("node", settings.log_level)
    try:
        app = create_app(settings, logger=log)
    except RuntimeFailure as e:
        # A node without Docker can do nothing: say so instead of showing a traceback.
        log.error("%s. Start dockerd, or point DOCKER_HOST at a running engine.", e)
        return 2
    try:
        return run_service(app, "node", settings.amqp_url, log)
    except ProxyError as e:
        # Apps are reached only through the proxy: a node without one must not take work.
        log.error(
            "%s. SHIPWRECK_CADDY_BINARY names the caddy executable, SHIPWRECK_PROXY_ADMIN a "
            "running Caddy's admin address, SHIPWRECK_UNBOUND_BINARY the unbound executable "
            "that answers Caddy's look-ups of the routes on SHIPWRECK_PROXY_DNS_PORT; each "
            "node on a machine needs its own SHIPWRECK_PROXY_ADMIN, SHIPWRECK_PROXY_HTTP_PORT "
            "and SHIPWRECK_PROXY_DNS_PORT.",
            e,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
