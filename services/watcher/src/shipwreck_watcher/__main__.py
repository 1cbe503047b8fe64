"""``python -m shipwreck_watcher``: run the watcher."""

from __future__ import annotations

import sys

from shipwreck_messaging.service import run_service
from shipwreck_runtime import configure_logging, load_settings
from shipwreck_watcher.app import create_app
from shipwreck_watcher.settings import WatcherSettings


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings(WatcherSettings)
    log = configure_logging("watcher", settings.log_level)
    return run_service(create_app(settings, logger=log), "watcher", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
