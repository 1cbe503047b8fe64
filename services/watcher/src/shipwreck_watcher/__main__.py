"""``python -m shipwreck_watcher``: run the watcher."""

from __future__ import annotations

import sys

from shipwreck_eventstore import StoreConfigError
from shipwreck_messaging.service import run_service
from shipwreck_runtime import configure_logging, exit_with, load_settings_or_exit
from shipwreck_watcher.app import create_app
from shipwreck_watcher.settings import WatcherSettings


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings_or_exit(WatcherSettings, "shipwreck-watcher")
    log = configure_logging("watcher", settings.log_level)
    try:
        app = create_app(settings, logger=log)
    except StoreConfigError as e:  # SHIPWRECK_DATABASE_URL, checked before any connection
        exit_with("shipwreck-watcher", str(e))
    return run_service(app, "watcher", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
