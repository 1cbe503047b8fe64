"""Orchestrator settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import StoreSettings


class OrchestratorSettings(StoreSettings, frozen=True, kw_only=True):
    """The AMQP URL, log level and event store location shared by every writer."""
