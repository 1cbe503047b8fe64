"""Node settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Annotated, Final

import msgspec

from shipwreck_runtime import CommonSettings, Count, Port, PositiveSeconds, Seconds

PUBLISH_HOST: Final = "127.0.0.1"
"""App ports are published on loopback only: the node's reverse proxy is the way in."""


class NodeSettings(CommonSettings, frozen=True, kw_only=True):
    """How a worker node builds and runs apps.

    ``SHIPWRECK_NODE_NAME`` (default: the hostname) names the node; its id derives from it,
    so a restarted node keeps its identity and its work queue.

    Templates: ``SHIPWRECK_BASE_IMAGE_PYTHON`` and ``SHIPWRECK_BASE_IMAGE_NODE`` are the
    ``FROM`` of the language templates (``just images`` builds local ones where no registry
    is reachable; ``SHIPWRECK_PULL_BASE_IMAGES=false`` never tries to pull a missing one).
    ``SHIPWRECK_BUILD_CA_BUNDLE`` is a PEM file trusted by pip and npm while dependencies
    are installed (behind a TLS-intercepting proxy); it never reaches the app's image.

    Limits: a container gets what its deployment requires (for now always the defaults of
    ``Requirements``, 0.5 CPU and 256 MB: nothing sets them), capped by
    ``SHIPWRECK_APP_MEMORY_LIMIT_MB``, ``SHIPWRECK_APP_CPUS_LIMIT`` and
    ``SHIPWRECK_APP_PIDS_LIMIT``. Every stage has a timeout (``SHIPWRECK_*_TIMEOUT_SECONDS``).

    Routing: every app is served by the node's Caddy at ``<app>.<SHIPWRECK_APPS_DOMAIN>``
    (and its config.domain) on ``SHIPWRECK_PROXY_HTTP_PORT``. ``SHIPWRECK_PROXY_HTTPS_PORT``
    turns Caddy's automatic HTTPS on (unset: plain HTTP only). ``SHIPWRECK_PROXY_ADMIN`` is
    Caddy's admin address, on loopback; the node starts Caddy (``SHIPWRECK_CADDY_BINARY``)
    when nothing answers there, and stops it again when it stops. Each node on a machine
    needs its own ports and admin address. ``SHIPWRECK_PROXY_MIGRATE_CONNECTIONS`` (default
    true) sets ``net.ipv4.tcp_migrate_req`` so that Caddy's config changes reset no waiting
    connection (see ``proxy``). A container that loses its route (superseded,
    stopped, cancelled) gets ``SHIPWRECK_DRAIN_SECONDS`` to finish the requests it has
    before it is stopped.

    Images: the newest ``SHIPWRECK_KEEP_IMAGES`` images of each app (and any a container
    uses) are kept for rollbacks; older ones are removed after each successful deployment.
    """

    node_name: str = ""
    heartbeat_seconds: PositiveSeconds = 2.0

    base_image_python: str = "python:3.12-slim"
    base_image_node: str = "node:20-slim"
    pull_base_images: bool = True
    build_ca_bundle: str | None = None

    git_allow_private: bool = False
    work_dir: str = ".shipwreck/node-work"

    app_memory_limit_mb: Count = 512
    app_cpus_limit: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    app_pids_limit: Count = 256

    clone_timeout_seconds: PositiveSeconds = 300.0
    build_timeout_seconds: PositiveSeconds = 900.0
    test_timeout_seconds: PositiveSeconds = 600.0
    health_timeout_seconds: PositiveSeconds = 60.0
    # An app without config.port has nothing to probe: it is healthy if it is still
    # running after this long.
    worker_grace_seconds: Seconds = 3.0
    stop_timeout_seconds: Seconds = 10.0

    apps_domain: str = "localhost"
    proxy_http_port: Port = 80
    proxy_https_port: Port | None = None
    proxy_admin: str = "127.0.0.1:2019"
    caddy_binary: str = "caddy"
    proxy_migrate_connections: bool = True
    # Where the node's unbound answers Caddy's look-ups of the routes (127.0.0.1 only).
    proxy_dns_port: Port = 2053
    unbound_binary: str = "unbound"
    drain_seconds: Seconds = 2.0

    keep_images: Count = 5

    @property
    def name(self) -> str:
        """The node's name (the hostname unless set)."""
        return self.node_name or socket.gethostname()

    @property
    def node_id(self) -> uuid.UUID:
        """A stable id for this node name."""
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"node.shipwreck/{self.name}")

    @property
    def node_work_dir(self) -> Path:
        """This node's own scratch directory (checkouts, build contexts).

        Per node id, so that two nodes sharing a working directory never clean up each
        other's work.
        """
        return Path(self.work_dir) / str(self.node_id)

    @property
    def log_cursor_dir(self) -> Path:
        """Where this node notes how far each deployment's log got (see ``logcursor``).

        Beside the scratch directory, like the proxy's, so that it outlives a restart.
        """
        return Path(self.work_dir) / "logs" / str(self.node_id)

    @property
    def proxy_dir(self) -> Path:
        """Where the Caddy this node starts keeps its config, log and certificates.

        Beside the node's scratch directory, not in it (that one is emptied at start-up),
        and per node, so that two nodes on one machine never share a Caddy config file.
        """
        return Path(self.work_dir) / "caddy" / str(self.node_id)
