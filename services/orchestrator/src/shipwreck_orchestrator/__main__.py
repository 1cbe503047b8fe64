"""``python -m shipwreck_orchestrator``: run the orchestrator."""

from __future__ import annotations

import sys

from shipwreck_eventstore import StoreConfigError
from shipwreck_messaging.service import run_service
from shipwreck_orchestrator.app import create_app
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_runtime import configure_logging, exit_with, load_settings_or_exit


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings_or_exit(OrchestratorSettings, "shipwreck-orchestrator")
    log = configure_logging("orchestrator", settings.log_level)
    try:
        app = create_app(settings, logger=log)
    except StoreConfigError as e:  # SHIPWRECK_DATABASE_URL, checked before any connection
        exit_with("shipwreck-orchestrator", str(e))
    return run_service(app, "orchestrator", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
