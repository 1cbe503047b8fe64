"""``python -m shipwreck_orchestrator``: run the orchestrator."""

from __future__ import annotations

import sys

from shipwreck_messaging.service import run_service
from shipwreck_orchestrator.app import create_app
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_runtime import configure_logging, load_settings


def main() -> int:
    """Load settings from the environment and run until SIGINT/SIGTERM."""
    settings = load_settings(OrchestratorSettings)
    log = configure_logging("orchestrator", settings.log_level)
    return run_service(create_app(settings, logger=log), "orchestrator", settings.amqp_url, log)


if __name__ == "__main__":
    sys.exit(main())
