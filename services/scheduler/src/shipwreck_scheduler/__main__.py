"""``python -m shipwreck_scheduler``: run the node scheduler."""

from __future__ import annotations

import sys

from shipwreck_messaging.service import run_service
from shipwreck_runtime import configure_logging, load_settings
from shipwreck_scheduler.app import create_app
from shipwreck_scheduler.settings import SchedulerSettings


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings(SchedulerSettings)
    log = configure_logging("scheduler", settings.log_level)
    return run_service(create_app(settings, logger=log), "scheduler", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
