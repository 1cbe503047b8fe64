"""Shipwreck runtime: settings from the environment, logging, background tasks."""

from shipwreck_runtime.common import DEFAULT_AMQP_URL, CommonSettings, StoreSettings
from shipwreck_runtime.logs import configure_logging
from shipwreck_runtime.settings import SettingsError, env_name, load_settings
from shipwreck_runtime.tasks import BackgroundTasks

__all__ = [
    "DEFAULT_AMQP_URL",
    "BackgroundTasks",
    "CommonSettings",
    "SettingsError",
    "StoreSettings",
    "configure_logging",
    "env_name",
    "load_settings",
]
