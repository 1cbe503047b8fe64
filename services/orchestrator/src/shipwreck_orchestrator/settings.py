"""Orchestrator settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import PositiveSeconds, StoreSettings


class OrchestratorSettings(StoreSettings, frozen=True, kw_only=True):
    """Stage timeouts (seconds) guarantee that nothing stays in progress forever."""

    git_allow_private: bool = False
    timeout_initialized_seconds: PositiveSeconds = 60.0
    timeout_scheduled_seconds: PositiveSeconds = 60.0
    timeout_cloning_seconds: PositiveSeconds = 300.0
    timeout_building_seconds: PositiveSeconds = 1200.0
    timeout_testing_seconds: PositiveSeconds = 600.0
    timeout_starting_seconds: PositiveSeconds = 300.0
    sweep_interval_seconds: PositiveSeconds = 5.0
