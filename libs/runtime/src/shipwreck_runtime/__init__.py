"""Shipwreck runtime: settings from the environment, logging, background tasks, the heap."""

from shipwreck_runtime.common import DEFAULT_AMQP_URL, CommonSettings, StoreSettings
from shipwreck_runtime.heap import freeze_startup_heap
from shipwreck_runtime.logs import configure_logging
from shipwreck_runtime.settings import (
    Count,
    LogLevel,
    Port,
    PositiveSeconds,
    Seconds,
    SettingsError,
    env_name,
    exit_with,
    load_settings,
    load_settings_or_exit,
)
from shipwreck_runtime.tasks import BackgroundTasks

__all__ = [
    "DEFAULT_AMQP_URL",
    "BackgroundTasks",
    "CommonSettings",
    "Count",
    "LogLevel",
    "Port",
    "PositiveSeconds",
    "Seconds",
    "SettingsError",
    "StoreSettings",
    "configure_logging",
    "env_name",
    "exit_with",
    "freeze_startup_heap",
    "load_settings",
    "load_settings_or_exit",
]
