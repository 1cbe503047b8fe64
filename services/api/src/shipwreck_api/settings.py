"""API settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import CommonSettings


class ApiSettings(CommonSettings, frozen=True, kw_only=True):
    """``SHIPWRECK_API_HOST``/``_PORT`` to listen on; ``SHIPWRECK_API_TOKEN``, the first admin
    token (when unset, one is generated into ``<state_dir>/api-token``, mode 0600)."""

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token: str | None = None
    state_dir: str = ".shipwreck"
