"""The node's ports: what the pipeline needs from git, Docker, the network and the proxy.

The pipeline (``pipeline.py``) only ever talks to these Protocols. The real adapters are
``gitcli.GitCli``, ``dockerruntime.DockerRuntime``, ``probe.NetworkProbe`` and
``proxy.CaddyRouter``; in-memory twins live in ``tests/support/fakes_node.py``. Every
method is a coroutine and every one of them may be cancelled: an adapter that runs a
process or a blocking call must stop it (kill the process, close the stream) when its
caller is cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from shipwreck_contracts import LogStream
from shipwreck_contracts.gitpolicy import RemoteRef

# --- labels every container and image of a deployment carries ------------------------------

LABEL_APP: Final = "org.shipwreck.app"
LABEL_DEPLOYMENT: Final = "org.shipwreck.deployment"
LABEL_ATTEMPT: Final = "org.shipwreck.attempt"
LABEL_NODE: Final = "org.shipwreck.node"
LABEL_COMMIT: Final = "org.shipwreck.commit"
LABEL_PORT: Final = "org.shipwreck.port"
"""The app's container port (from config.port), to probe it again after a redelivery."""
LABEL_ROLE: Final = "org.shipwreck.role"
"""``app`` for the container that serves, ``test`` for the one-off test run."""
LABEL_DOMAIN: Final = "org.shipwreck.domain"
"""The app's own domain (config.domain) on its container, to route it again after a restart."""
LABEL_MANIFEST: Final = "org.shipwreck.manifest"
"""On an app's image: the text of the Shipwreck.toml it was built from, so that a rollback
can run the image again (port, environment, health check) without cloning. The image holds
the same file under /app already: the label adds no exposure."""
LABEL_MANIFEST_FILE: Final = "org.shipwreck.manifest-file"
"""On an app's image: the manifest's file name (``Shipwreck.toml`` ...), for messages."""

ROLE_APP: Final = "app"
ROLE_TEST: Final = "test"

OutputCallback = Callable[[LogStream, str], Awaitable[None]]
"""Receives output as it comes: the stream it came from and a chunk of text (not a line)."""


# --- git -------------------------------------------------------------------------------------


class GitError(Exception):
    """A git operation failed; the message is for people (no secrets: URLs passed policy)."""


class BranchNotFound(GitError):
    """The remote has no ``refs/heads/<branch>``."""


@dataclass(frozen=True)
class Checkout:
    """A commit checked out into ``path`` (no ``.git`` hooks ran, symlinks are plain files).

    ``symlinks`` are the repository paths that git records as symbolic links: with
    ``core.symlinks=false`` they are checked out as small text files, and the node refuses
    to read any of them as a manifest or dependency list.
    """

    path: Path
    commit: str
    symlinks: frozenset[str] = frozenset()


class GitRemote(Protocol):
    """A remote Git repository, reached only after ``gitpolicy`` accepted its URL."""

    async def resolve(self, remote: RemoteRef, branch: str) -> str:
        """The full commit id at ``refs/heads/<branch>``; raises `BranchNotFound`/`GitError`."""
        ...

    async def fetch(self, remote: RemoteRef, branch: str, commit: str, into: Path) -> Checkout:
        """Shallow-fetch exactly ``commit`` into the empty directory ``into`` and check it out."""
        ...


# --- containers ------------------------------------------------------------------------------


class RuntimeFailure(Exception):
    """The container runtime refused or failed an operation; the message is for people."""


class ImageUnavailable(RuntimeFailure):
    """An image is not present and could not be pulled."""


class BuildFailed(RuntimeFailure):
    """An image build ended with an error (the message is the builder's last error)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container."""

    memory_mb: int
    cpus: float
    pids: int


@dataclass(frozen=True)
class RunSpec:
    """A container to run from a built image."""

    image: str
    name: str
    command: Sequence[str] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    limits: Limits
    port: int | None = None
    """Container port to publish on the loopback address, on a random host port."""


@dataclass(frozen=True)
class ContainerInfo:
    """What the node needs to know about one of its containers."""

    id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None = None
    host_port: int | None = None
    """Host port the container port is published on (127.0.0.1), once running."""
    address: str | None = None
    """The container's own IP address on its network, if it has one."""
    image: str = ""
    """The image reference the container was created from."""
    image_id: str = ""
    """The id of that image (what a tag pointed at when the container was created)."""
    kept_running: bool = False
    """Whether `ContainerRuntime.keep_running` was called: it passed its health check."""
    created: datetime | None = None

    @property
    def deployment_id(self) -> uuid.UUID | None:
        """The deployment the container belongs to, from its label."""
        value = self.labels.get(LABEL_DEPLOYMENT)
        try:
            return uuid.UUID(value) if value else None
        except ValueError:
            return None


@dataclass(frozen=True)
class ImageInfo:
    """An image on this node."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    created: datetime
    tagged: datetime | None = None
    """When a tag was last added to it (a rollback tags an old image for its deployment)."""

    @property
    def last_used(self) -> datetime:
        """When a deployment last took this image: built, or tagged by a rollback."""
        return max(self.created, self.tagged) if self.tagged is not None else self.created


@dataclass(frozen=True)
class ContainerQuery:
    """Which containers to list: every given label must match."""

    labels: Mapping[str, str] = field(default_factory=dict)
    running_only: bool = False


class ContainerRuntime(Protocol):
    """Builds images and runs containers, all labelled so they can be found again."""

    async def image_present(self, ref: str) -> bool:
        """Whether ``ref`` is an image on this node."""
        ...

    async def image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` names, or None if this node does not have it."""
        ...

    async def find_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """The (tagged) images whose labels match every one of ``labels``."""
        ...

    async def tag(self, ref: str, new: str) -> None:
        """Give the image ``ref`` the additional tag ``new``; raises `ImageUnavailable`."""
        ...

    async def pull(self, ref: str) -> None:
        """Pull ``ref``; raises `ImageUnavailable` with the registry's answer."""
        ...

    async def build(
        self,
        context: Path,
        *,
        tag: str,
        build_args: Mapping[str, str],
        on_output: OutputCallback,
        stage_tags: Mapping[str, str] | None = None,
    ) -> None:
        """Build ``context`` (a tar with a Dockerfile at its root) as ``tag``, with the
        values of the Dockerfile's ``ARG``s in ``build_args`` (its labels take theirs there:
        see `shipwreck_node.templates`).

        Output goes to ``on_output`` as it is produced. Raises `BuildFailed`. Cancelling the
        caller aborts the build on the daemon. ``stage_tags`` maps names of build stages
        (``FROM ... AS <name>``) to tags for the image each of them ends with: without a
        tag, an earlier stage's image is left dangling, and nothing tells when it can go.
        """
        ...

    async def run_to_exit(self, spec: RunSpec, *, on_output: OutputCallback) -> int:
        """Run a one-off container until it exits, streaming its output; its exit code.

        The container is removed afterwards (also when the caller is cancelled).
        """
        ...

    async def start(self, spec: RunSpec) -> ContainerInfo:
        """Create and start a long-running container (with an init process)."""
        ...

    async def keep_running(self, container_id: str) -> None:
        """From now on, restart the container whenever it dies (it passed its health check)."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's current state, or None if it no longer exists."""
        ...

    async def wait_exit(self, container_id: str, within: float) -> int | None:
        """Wait up to ``within`` seconds for the container to exit: its exit code, or None."""
        ...

    async def tail(self, container_id: str, lines: int) -> list[str]:
        """The last ``lines`` lines of the container's output (stdout and stderr)."""
        ...

    async def follow(
        self, container_id: str, on_output: OutputCallback, *, since: datetime | None = None
    ) -> None:
        """Stream the container's output from its start (or what it wrote after ``since``)
        until it stops (or the caller is cancelled)."""
        ...

    async def find(self, query: ContainerQuery) -> list[ContainerInfo]:
        """The containers matching ``query``, in no particular order."""
        ...

    async def remove(self, container_id: str, *, stop_timeout: float = 0) -> None:
        """Stop (SIGTERM, then SIGKILL after ``stop_timeout`` s) and remove; idempotent."""
        ...

    async def remove_image(self, ref: str) -> None:
        """Remove an image tag if present; idempotent. The image itself goes with its last
        tag, unless a container uses it (then the tag stays)."""
        ...


# --- the reverse proxy -----------------------------------------------------------------------


class ProxyError(RuntimeError):
    """The reverse proxy could not be reached, started or configured."""


class Router(Protocol):
    """The node's reverse proxy: one route per app, from its host names to one upstream.

    Upstreams are ``host:port`` addresses (an app container's published loopback port).
    Methods raise `ProxyError`.
    """

    async def start(self) -> None:
        """Make sure the proxy runs (start it if none answers)."""
        ...

    async def close(self) -> None:
        """Stop the proxy if this node supervises it (`start` started it, or adopted it from
        a node killed before); one run by someone else keeps running."""
        ...

    async def revive(self) -> bool:
        """Start again any part of the proxy that this node supervises (started by `start`,
        or adopted from a node killed before it) and that has exited.

        True when the routes went with it (the proxy came back empty): the caller routes
        every app again.
        """
        ...

    async def exited(self, within: float) -> bool:
        """Wait until a part of the proxy that this node supervises exits (True: `revive`
        brings it back), for at most ``within`` seconds (False)."""
        ...

    async def route(
        self,
        app: str,
        hosts: Sequence[str],
        upstream: str,
        *,
        only_if_upstream: str | None = None,
    ) -> bool:
        """Send ``hosts`` to ``upstream``: create the app's route, or switch it in one change.

        With ``only_if_upstream``, only while the route still points there (checked and
        changed atomically with respect to this node's other route changes). Whether it
        changed the route.
        """
        ...

    async def upstream(self, app: str) -> str | None:
        """Where the app's route points now, or None if it has none."""
        ...

    async def routes(self) -> dict[str, str]:
        """Every app route of this proxy: app -> upstream."""
        ...

    async def remove(self, app: str, *, only_if_upstream: str | None = None) -> bool:
        """Delete the app's route (with ``only_if_upstream``, only while it points there).

        Whether a route was deleted.
        """
        ...


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One health probe: did it pass, and what was seen (for the failure message)."""

    ok: bool
    detail: str
    answered: bool = False
    """Whether the app answered at all (an HTTP status, even an error, or a connection)."""


class HealthProbe(Protocol):
    """Looks at an app from the outside, the way a user's request would reach it."""

    async def http(self, url: str, within: float) -> ProbeResult:
        """GET ``url`` (waiting at most ``within`` s): passes on a 2xx or 3xx answer."""
        ...

    async def tcp(self, host: str, port: int, within: float) -> ProbeResult:
        """Passes when a TCP connection to ``host:port`` is accepted within ``within`` s."""
        ...
