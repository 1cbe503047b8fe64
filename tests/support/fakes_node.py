"""In-memory twins of the node's ports, for fast tests of the pipeline and the work runner.

- `FakeGit`: repositories as dicts of files; ``fetch`` writes them into the checkout
  directory, so the pipeline reads real files exactly as after a real clone.
- `FakeRuntime`: images and containers as records. How an app behaves once started is
  chosen per image by the test (serve, crash, never listen). Builds read the real build
  context tar, so tests can look at the rendered Dockerfile. Time is a counter, so "newer"
  is simply "made later".
- `FakeProbe`: answers from the fake containers' behaviour.
- `FakeRouter`: the reverse proxy's routes as a dict, with every change recorded.
- `Outbox`: what the node sent, with helpers to pick reports and log lines.

Any of them can be made to block in a call until cancelled (``block``), to test that a
CancelWork stops the work wherever it is.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tarfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from shipwreck_contracts import (
    DeployWork,
    LogLine,
    LogStream,
    Requirements,
    StageReported,
    WorkFailed,
    WorkSucceeded,
)
from shipwreck_contracts.base import Message
from shipwreck_contracts.gitpolicy import RemoteRef
from shipwreck_node.ports import (
    LABEL_DEPLOYMENT,
    BranchNotFound,
    BuildFailed,
    Checkout,
    ContainerInfo,
    ContainerQuery,
    GitError,
    ImageInfo,
    ImageUnavailable,
    OutputCallback,
    ProbeResult,
    ProxyError,
    RunSpec,
)

M = TypeVar("M", bound=Message)
Behaviour = Literal["serve", "crash", "silent", "http-error"]

SHIPWRECK_TOML = """\
[app]
name = "hello"

[config]
lang = "python3"
run = "python3 app.py"
port = 8000
"""


def deploy_work(
    repo_url: str = "https://git.example.com/acme/hello.git",
    *,
    app: str = "hello",
    branch: str = "main",
    attempt: int = 1,
    node_id: uuid.UUID | None = None,
    commit: str | None = None,
    deployment_id: uuid.UUID | None = None,
    image: str | None = None,
) -> DeployWork:
    """A `DeployWork` with sensible defaults (``image``: a rollback to that image)."""
    return DeployWork(
        deployment_id=deployment_id or uuid.uuid4(),
        app=app,
        repo_url=repo_url,
        branch=branch,
        commit=commit,
        node_id=node_id or uuid.uuid4(),
        attempt=attempt,
        requirements=Requirements(),
        image=image,
        requested_at=datetime.now(UTC),
    )


def public_resolver(host: str) -> list[str]:
    """A DNS stand-in: every name is a public address (documentation range aside)."""
    return ["93.184.216.34"]


class Block:
    """Makes a fake call wait until cancelled; ``entered`` fires when it starts waiting."""

    def __init__(self) -> None:
        self.entered = anyio.Event()

    async def wait(self) -> None:
        self.entered.set()
        await anyio.sleep_forever()


# --- git -------------------------------------------------------------------------------------


class FakeGit:
    """`GitRemote` over in-memory repositories."""

    def __init__(self) -> None:
        self.branches: dict[str, dict[str, str]] = {}
        self.trees: dict[str, dict[str, str]] = {}
        self.links: dict[str, frozenset[str]] = {}
        self.unreachable: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.block_fetch: Block | None = None

    def push(
        self,
        url: str,
        files: Mapping[str, str],
        *,
        branch: str = "main",
        symlinks: Iterable[str] = (),
    ) -> str:
        """Make ``files`` the head of ``branch`` at ``url``; the new commit id."""
        digest = hashlib.sha1(repr((url, branch, sorted(files.items()))).encode())  # noqa: S324
        commit = digest.hexdigest()
        self.branches.setdefault(url, {})[branch] = commit
        self.trees[commit] = dict(files)
        self.links[commit] = frozenset(symlinks)
        return commit

    async def resolve(self, remote: RemoteRef, branch: str) -> str:
        self.calls.append(("resolve", remote.url))
        if remote.url in self.unreachable or remote.url not in self.branches:
            raise GitError(f"could not read {remote.url}: unable to connect")
        try:
            return self.branches[remote.url][branch]
        except KeyError:
            raise BranchNotFound(f"branch {branch!r} does not exist in {remote.url}") from None

    async def fetch(self, remote: RemoteRef, branch: str, commit: str, into: Path) -> Checkout:
        self.calls.append(("fetch", remote.url))
        if commit not in self.trees:
            raise GitError(f"could not fetch {commit[:12]} from {remote.url}")
        await anyio.to_thread.run_sync(_write_tree, into, self.trees[commit])
        if self.block_fetch is not None:
            await self.block_fetch.wait()  # a half-done clone: files are on disk
        return Checkout(path=into, commit=commit, symlinks=self.links[commit])


def _write_tree(root: Path, files: Mapping[str, str]) -> None:
    root.mkdir(parents=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


# --- containers ------------------------------------------------------------------------------


@dataclass
class FakeContainer:
    """A container record; ``info`` is what inspect/find return."""

    info: ContainerInfo
    spec: RunSpec
    behaviour: Behaviour
    output: list[tuple[LogStream, str]] = field(default_factory=list)
    written: list[datetime] = field(default_factory=list)
    """When each line of ``output`` was written (the start's output: at its creation)."""


@dataclass
class BuildRecord:
    """One build: the tag, the rendered Dockerfile, the files of the context and the labels
    the image got."""

    tag: str
    dockerfile: str
    files: list[str]
    labels: Mapping[str, str]
    stage_tags: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FakeImage:
    """An image record; several tags may name the same one."""

    id: str
    labels: Mapping[str, str]
    created: datetime
    tagged: datetime


_EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class FakeRuntime:
    """`ContainerRuntime` in memory.

    ``images`` maps tags to image records. As with Docker, removing a tag removes the
    image only with its last tag, and not while a container uses it.
    """

    def __init__(self, images: Iterable[str] = ()) -> None:
        self._ticks = itertools.count(1)
        self.images: dict[str, FakeImage] = {}
        for ref in images:
            self.add_image(ref)
        self.pullable: set[str] = set()
        self.containers: dict[str, FakeContainer] = {}
        self.builds: list[BuildRecord] = []
        self.removed: list[str] = []
        self.removed_images: list[str] = []
        self.build_output = ["Step 1/2 : FROM base\n", "Successfully built\n"]
        self.build_error: str | None = None
        self.test_exit_code = 0
        self.test_output = ["running 3 tests\n", "all passed\n"]
        self.app_behaviour: Behaviour = "serve"
        self.app_output: list[tuple[LogStream, str]] = [(LogStream.STDOUT, "listening\n")]
        self.crash_exit_code = 1
        self.block_build: Block | None = None
        self.block_test: Block | None = None
        self.followed: list[str] = []
        self.followed_since: list[datetime | None] = []
        self._ids = itertools.count(1)
        self._ports = itertools.count(32768)

    # images

    def now(self) -> datetime:
        """The fake clock: every call is one second later."""
        return _EPOCH + timedelta(seconds=next(self._ticks))

    def add_image(
        self, ref: str, labels: Mapping[str, str] | None = None, *, image_id: str | None = None
    ) -> FakeImage:
        """Make ``ref`` name an image (a new one, or ``image_id`` if it exists)."""
        now = self.now()
        existing = next((i for i in self.images.values() if i.id == image_id), None)
        if existing is not None:
            existing.tagged = now
            self.images[ref] = existing
            return existing
        image = FakeImage(
            image_id or f"sha256:{next(self._ticks):064x}", dict(labels or {}), now, now
        )
        self.images[ref] = image
        return image

    async def image_present(self, ref: str) -> bool:
        return ref in self.images

    async def image(self, ref: str) -> ImageInfo | None:
        image = self.images.get(ref)
        return self._info(image) if image is not None else None

    async def find_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        found = {i.id: i for i in self.images.values()}
        return [
            self._info(i)
            for i in found.values()
            if all(i.labels.get(k) == v for k, v in labels.items())
        ]

    async def tag(self, ref: str, new: str) -> None:
        image = self.images.get(ref)
        if image is None:
            raise ImageUnavailable(f"no such image: {ref}")
        self.add_image(new, image_id=image.id)

    async def pull(self, ref: str) -> None:
        if ref not in self.pullable:
            raise ImageUnavailable(f"pull access denied for {ref}")
        self.add_image(ref)

    async def build(
        self,
        context: Path,
        *,
        tag: str,
        build_args: Mapping[str, str],
        on_output: OutputCallback,
        stage_tags: Mapping[str, str] | None = None,
    ) -> None:
        with tarfile.open(context) as tar:
            names = tar.getnames()
            member = tar.extractfile("Dockerfile")
            dockerfile = member.read().decode() if member is not None else ""
        labels = _image_labels(dockerfile, build_args)
        self.builds.append(
            BuildRecord(tag, dockerfile, names, dict(labels), dict(stage_tags or {}))
        )
        if self.block_build is not None:
            await self.block_build.wait()
        for chunk in self.build_output:
            await on_output(LogStream.BUILD, chunk)
        if self.build_error is not None:
            raise BuildFailed(self.build_error)
        for stage, stage_tag in (stage_tags or {}).items():
            # Like the build cache: the same stage text makes the same image.
            text = _stage_text(dockerfile, stage)
            if text is not None:
                digest = hashlib.sha256(text.encode()).hexdigest()
                self.add_image(stage_tag, image_id=f"sha256:{digest}")
        self.add_image(tag, labels)

    async def remove_image(self, ref: str) -> None:
        image = self.images.get(ref)
        if image is None:
            return
        others = [t for t, i in self.images.items() if i.id == image.id and t != ref]
        in_use = any(c.info.image_id == image.id for c in self.containers.values())
        if not others and in_use:
            return  # Docker refuses: a container uses it
        del self.images[ref]
        self.removed_images.append(ref)

    def tags_of(self, repository: str) -> set[str]:
        """The tags in ``repository`` (``shipwreck/app-hello``), without the repository."""
        return {t.rpartition(":")[2] for t in self.images if t.rpartition(":")[0] == repository}

    def _info(self, image: FakeImage) -> ImageInfo:
        tags = tuple(t for t, i in self.images.items() if i.id == image.id)
        return ImageInfo(image.id, tags, dict(image.labels), image.created, image.tagged)

    # containers

    async def run_to_exit(self, spec: RunSpec, *, on_output: OutputCallback) -> int:
        container = self._create(spec, "serve")
        try:
            if self.block_test is not None:
                await self.block_test.wait()
            for chunk in self.test_output:
                await on_output(LogStream.STDOUT, chunk)
            return self.test_exit_code
        finally:
            await self.remove(container.info.id)

    async def start(self, spec: RunSpec) -> ContainerInfo:
        if spec.image not in self.images:
            raise ImageUnavailable(f"no such image: {spec.image}")
        if any(c.info.name == spec.name for c in self.containers.values()):
            raise RuntimeError(f"Conflict. The container name {spec.name} is already in use")
        container = self._create(spec, self.app_behaviour)
        container.output = list(self.app_output)
        if self.app_behaviour == "crash":
            container.output.append((LogStream.STDERR, "Traceback: boom\n"))
            container.info = replace(container.info, running=False, exit_code=self.crash_exit_code)
        container.written = [container.info.created or _EPOCH] * len(container.output)
        return container.info

    async def keep_running(self, container_id: str) -> None:
        container = self.containers.get(container_id)
        if container is not None:
            container.info = replace(container.info, kept_running=True)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        container = self.containers.get(container_id)
        return container.info if container is not None else None

    async def wait_exit(self, container_id: str, within: float) -> int | None:
        container = self.containers.get(container_id)
        if container is None:
            return -1
        return None if container.info.running else container.info.exit_code

    async def tail(self, container_id: str, lines: int) -> list[str]:
        container = self.containers.get(container_id)
        if container is None:
            return []
        return [text.rstrip("\n") for _, text in container.output][-lines:]

    async def follow(
        self, container_id: str, on_output: OutputCallback, *, since: datetime | None = None
    ) -> None:
        self.followed.append(container_id)
        self.followed_since.append(since)
        container = self.containers.get(container_id)
        if container is None:
            return
        for (stream, text), at in zip(container.output, container.written, strict=False):
            if since is None or at > since:
                await on_output(stream, text)

    def write(self, container_id: str, stream: LogStream, text: str, at: datetime) -> None:
        """The app in the container prints ``text`` at ``at`` (a later `follow` sees it)."""
        container = self.containers[container_id]
        container.output.append((stream, text))
        container.written.append(at)

    async def find(self, query: ContainerQuery) -> list[ContainerInfo]:
        return [
            c.info
            for c in self.containers.values()
            if all(c.info.labels.get(k) == v for k, v in query.labels.items())
            and (c.info.running or not query.running_only)
        ]

    async def remove(self, container_id: str, *, stop_timeout: float = 0) -> None:
        if self.containers.pop(container_id, None) is not None:
            self.removed.append(container_id)

    def for_deployment(self, deployment_id: uuid.UUID) -> list[FakeContainer]:
        """The containers labelled with ``deployment_id``."""
        return [
            c
            for c in self.containers.values()
            if c.info.labels.get(LABEL_DEPLOYMENT) == str(deployment_id)
        ]

    def _create(self, spec: RunSpec, behaviour: Behaviour) -> FakeContainer:
        number = next(self._ids)
        image = self.images.get(spec.image)
        info = ContainerInfo(
            id=f"c{number:063d}",
            name=spec.name,
            labels=dict(spec.labels),
            running=True,
            host_port=next(self._ports) if spec.port is not None else None,
            address=f"172.17.0.{number % 250 + 2}",
            image=spec.image,
            image_id=image.id if image is not None else "",
            created=self.now(),
        )
        container = FakeContainer(info=info, spec=spec, behaviour=behaviour)
        self.containers[info.id] = container
        return container


_LABEL_PAIR = re.compile(r'"([^"]+)"="\$\{(\w+)\}"')


def _image_labels(dockerfile: str, build_args: Mapping[str, str]) -> dict[str, str]:
    """The labels the Dockerfile's ``LABEL`` lines give the image, as the template writes
    them (``"key"="${ARG}"``), their values taken from ``build_args`` as the builder does."""
    labels: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if line.startswith("LABEL "):
            for key, arg in _LABEL_PAIR.findall(line):
                labels[key] = build_args[arg]  # an ARG without a value: a template bug
    return labels


def _stage_text(dockerfile: str, stage: str) -> str | None:
    """The lines of the build stage ``stage`` (``FROM ... AS <stage>``) of a Dockerfile."""
    lines: list[str] | None = None
    for line in dockerfile.splitlines():
        if line.upper().startswith("FROM "):
            if lines is not None:
                break
            if line.split()[-1] == stage and " AS " in line.upper():
                lines = []
        if lines is not None:
            lines.append(line)
    return "\n".join(lines) if lines is not None else None


class FakeProbe:
    """`HealthProbe` answering for the fake runtime's containers."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.probes: list[str] = []
        self.block: Block | None = None

    async def http(self, url: str, within: float) -> ProbeResult:
        self.probes.append(url)
        if self.block is not None:
            await self.block.wait()
        port = int(url.split(":")[2].split("/")[0])
        container = self._find(lambda c: c.info.host_port == port)
        return self._answer(container)

    async def tcp(self, host: str, port: int, within: float) -> ProbeResult:
        self.probes.append(f"tcp://{host}:{port}")
        if self.block is not None:
            await self.block.wait()
        container = self._find(lambda c: c.info.address == host or c.info.host_port == port)
        return self._answer(container)

    def _find(self, match: Callable[[FakeContainer], bool]) -> FakeContainer | None:
        return next((c for c in self.runtime.containers.values() if match(c)), None)

    def _answer(self, container: FakeContainer | None) -> ProbeResult:
        if container is None or container.behaviour in ("silent", "crash"):
            return ProbeResult(ok=False, detail="connection refused")
        if container.behaviour == "http-error":
            return ProbeResult(ok=False, detail="HTTP 500 Internal Server Error", answered=True)
        return ProbeResult(ok=True, detail="HTTP 200 OK", answered=True)


# --- the reverse proxy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One change the node made to its proxy."""

    action: Literal["route", "remove"]
    app: str
    upstream: str


class FakeRouter:
    """`Router` in memory: app -> (hosts, upstream), and the list of changes made."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[list[str], str]] = {}
        self.changes: list[Change] = []
        self.started = False
        self.closed = False
        self.failure: str | None = None
        """Set it to make every call fail with this message (Caddy down)."""
        self.block_route: Block | None = None
        """Blocks `route` after the change is made: a switch interrupted before it returned."""
        self.changed = anyio.Event()
        self._exit = anyio.Event()
        self._lost = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    @property
    def lost(self) -> bool:
        """Set it to make the next `revive` find the proxy restarted without its routes."""
        return self._lost

    @lost.setter
    def lost(self, value: bool) -> None:
        self._lost = value
        if value:
            self._exit.set()  # as the kernel tells the real one
        elif self._exit.is_set():
            self._exit = anyio.Event()

    async def exited(self, within: float) -> bool:
        with anyio.move_on_after(within):
            await self._exit.wait()
            return True
        return False

    async def revive(self) -> bool:
        self._check()
        lost, self.lost = self.lost, False
        if lost:
            self.table.clear()
        return lost

    async def route(
        self,
        app: str,
        hosts: Sequence[str],
        upstream: str,
        *,
        only_if_upstream: str | None = None,
    ) -> bool:
        self._check()
        if only_if_upstream is not None and self.current(app) != only_if_upstream:
            return False
        self.table[app] = (list(hosts), upstream)
        self._record(Change("route", app, upstream))
        if self.block_route is not None:
            await self.block_route.wait()
        return True

    async def upstream(self, app: str) -> str | None:
        self._check()
        return self.current(app)

    async def routes(self) -> dict[str, str]:
        self._check()
        return {app: upstream for app, (_, upstream) in self.table.items()}

    async def remove(self, app: str, *, only_if_upstream: str | None = None) -> bool:
        self._check()
        current = self.current(app)
        if current is None or (only_if_upstream is not None and current != only_if_upstream):
            return False
        del self.table[app]
        self._record(Change("remove", app, current))
        return True

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds; it is checked after every change."""
        while not condition():
            await self.changed.wait()

    def current(self, app: str) -> str | None:
        """Where the app's route points, or None."""
        entry = self.table.get(app)
        return entry[1] if entry is not None else None

    def hosts(self, app: str) -> list[str]:
        """The host names of the app's route (none without a route)."""
        entry = self.table.get(app)
        return entry[0] if entry is not None else []

    def _check(self) -> None:
        if self.failure is not None:
            raise ProxyError(self.failure)

    def _record(self, change: Change) -> None:
        self.changes.append(change)
        self.changed.set()
        self.changed = anyio.Event()


# --- what the node sends ---------------------------------------------------------------------


class Outbox:
    """Collects every message the node sends, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.changed = anyio.Event()

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        self.changed.set()
        self.changed = anyio.Event()

    def of(self, kind: type[M]) -> list[M]:
        """The messages of one type, in order."""
        return [m for m in self.messages if isinstance(m, kind)]

    @property
    def stages(self) -> list[str]:
        """The stages reported, in order."""
        return [m.stage.value for m in self.of(StageReported)]

    @property
    def outcomes(self) -> list[WorkSucceeded | WorkFailed]:
        """The terminal reports, in order."""
        return [m for m in self.messages if isinstance(m, WorkSucceeded | WorkFailed)]

    def lines(self, stream: LogStream | None = None) -> list[str]:
        """The text of the log lines sent (on ``stream``, or all)."""
        return [m.text for m in self.of(LogLine) if stream is None or m.stream is stream]

    async def wait_for(self, kind: type[M], count: int = 1) -> list[M]:
        """Wait until ``count`` messages of ``kind`` were sent."""
        await self.wait_until(lambda: len(self.of(kind)) >= count)
        return self.of(kind)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds; it is checked after every message sent."""
        while not condition():
            await self.changed.wait()
