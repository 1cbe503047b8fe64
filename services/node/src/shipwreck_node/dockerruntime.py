"""Docker Engine as the node's `ContainerRuntime`, through the ``docker`` SDK.

The SDK is synchronous: every call runs in a worker thread (``anyio.to_thread``). Streams
(build output, container logs) are read in a thread that hands each item to the event loop,
and are *closed* when the caller is cancelled: closing a build's stream makes the daemon
abandon the build and remove its intermediate container, closing a log stream ends the
reading thread. Long-lived log readers get their own thread limiter, so that a node running
many apps never starves the short calls of threads.

Two API clients: one with a bounded timeout for request/response calls, one without a
practical timeout for streams, because a build step or an app can be silent for minutes and
the SDK's default 60 s read timeout would silently end the stream.

A call that creates a container is never abandoned half-way: when the calling task is
cancelled (CancelWork), the cancellation goes on once the call has returned, so that the
clean-up after it finds the container (see `run_to_completion`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.models.images import Image
from docker.types.daemon import CancellableStream
from docker.utils import kwargs_from_env, parse_repository_tag

from shipwreck_contracts import LogStream
from shipwreck_node.ports import (
    BuildFailed,
    ContainerInfo,
    ContainerQuery,
    ImageInfo,
    ImageUnavailable,
    OutputCallback,
    RunSpec,
    RuntimeFailure,
)
from shipwreck_node.settings import PUBLISH_HOST

T = TypeVar("T")

REQUEST_TIMEOUT: Final = 120
STREAM_TIMEOUT: Final = 7 * 24 * 3600
"""Read timeout of streams: effectively none; stage timeouts bound them instead."""
REMOVAL_WAIT: Final = 10
"""How long one wait for someone else's removal of a container lasts before trying again."""

# The classic builder's progress lines: a stage starts at its FROM step, and every step
# ends with the id of the image it made.
_FROM_STEP: Final = re.compile(r"^Step \d+/\d+ : FROM \S+(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_STEP_IMAGE: Final = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")
_NEVER: Final = "0001-01-01T00:00:00Z"  # Docker's "not set" time


class _Closable(Protocol):
    def close(self) -> None: ...


class _StreamingAPIClient(docker.APIClient):
    """An API client that remembers, per thread, the response of its last streamed call.

    ``APIClient.build`` returns a bare generator over the response; keeping the response
    lets the node wrap it in a `CancellableStream`, whose ``close`` shuts the socket down
    from another thread. That is the only way to stop a build that is blocked reading.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last = threading.local()

    def _stream_helper(self, response: requests.Response, decode: bool = False) -> Iterator[Any]:
        self._last.response = response
        stream: Iterator[Any] = super()._stream_helper(  # type: ignore[misc]  # private in the stubs
            response, decode=decode
        )
        return stream

    def last_response(self) -> requests.Response:
        """The response of the last streamed call made by this thread."""
        response: requests.Response = self._last.response
        return response


class DockerRuntime:
    """`ContainerRuntime` over a Docker Engine."""

    def __init__(self, client: docker.DockerClient, streams: _StreamingAPIClient) -> None:
        self._client = client
        self._streams = streams
        self._readers = anyio.CapacityLimiter(512)

    @classmethod
    def from_env(cls) -> DockerRuntime:
        """Connect to the engine named by ``DOCKER_HOST`` (default: the local socket)."""
        try:
            client = docker.DockerClient.from_env(timeout=REQUEST_TIMEOUT)
            streams = _StreamingAPIClient(
                version=client.api.api_version, timeout=STREAM_TIMEOUT, **kwargs_from_env()
            )
        except docker.errors.DockerException as e:
            raise RuntimeFailure(f"cannot reach the Docker engine: {e}") from None
        return cls(client, streams)

    # --- images --------------------------------------------------------------------------

    async def image_present(self, ref: str) -> bool:
        """Whether ``ref`` is an image on this node."""

        def get() -> bool:
            try:
                self._client.images.get(ref)
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self._call(get)

    async def image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` names, or None if absent."""

        def get() -> ImageInfo | None:
            try:
                return _image_info(self._client.images.get(ref))
            except docker.errors.ImageNotFound:
                return None

        return await self._call(get)

    async def find_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """The tagged images whose labels match ``labels``."""

        def find() -> list[ImageInfo]:
            filters: dict[str, Any] = {"label": [f"{k}={v}" for k, v in labels.items()]}
            return [_image_info(image) for image in self._client.images.list(filters=filters)]

        return await self._call(find)

    async def tag(self, ref: str, new: str) -> None:
        """Add the tag ``new`` to the image ``ref``."""
        repository, tag = parse_repository_tag(new)

        def add() -> None:
            try:
                self._client.api.tag(ref, repository, tag)
            except docker.errors.NotFound as e:
                raise ImageUnavailable(f"no image {ref}: {_explain(e)}") from None

        await self._call(add)

    async def pull(self, ref: str) -> None:
        """Pull ``ref`` from its registry."""
        repository, tag = parse_repository_tag(ref)
        try:
            await self._call(lambda: self._client.images.pull(repository, tag=tag or "latest"))
        except RuntimeFailure as e:
            raise ImageUnavailable(str(e)) from None

    async def build(
        self,
        context: Path,
        *,
        tag: str,
        build_args: Mapping[str, str],
        on_output: OutputCallback,
        stage_tags: Mapping[str, str] | None = None,
    ) -> None:
        """Build the tar ``context`` as ``tag``, streaming its output; raises `BuildFailed`.

        ``stage_tags``: the image each named stage ends with gets that tag (found from the
        classic builder's step lines; a stage not in the Dockerfile is skipped).
        """
        errors: list[str] = []
        stages = StageImages()

        def open_stream() -> CancellableStream[dict[str, Any]]:
            with context.open("rb") as f:
                # The request body (the context) is sent before build() returns.
                items = self._streams.build(
                    fileobj=f,
                    custom_context=True,
                    tag=tag,
                    buildargs=dict(build_args),
                    rm=True,
                    forcerm=True,  # intermediate containers go, even when a step fails
                    pull=False,
                    decode=True,
                )
            return CancellableStream(items, self._streams.last_response())

        async def on_item(item: dict[str, Any]) -> None:
            if "stream" in item:
                stages.feed(str(item["stream"]))
                await on_output(LogStream.BUILD, str(item["stream"]))
            elif "error" in item:
                detail = item.get("errorDetail") or {}
                errors.append(str(detail.get("message") or item["error"]).strip())
            elif "status" in item and "progressDetail" not in item:
                await on_output(LogStream.BUILD, f"{item['status']}\n")

        try:
            await self._pump(open_stream, on_item)
        except RuntimeFailure as e:
            raise BuildFailed(str(e)) from None
        if errors:
            raise BuildFailed(errors[-1])
        await on_output(LogStream.BUILD, "\n")  # ends an unterminated last line
        ends = stages.ends()
        for stage, stage_tag in (stage_tags or {}).items():
            if stage in ends:
                await self.tag(ends[stage], stage_tag)

    async def remove_image(self, ref: str) -> None:
        """Remove the tag ``ref`` if present (an image in use by a container is kept)."""

        def remove() -> None:
            try:
                self._client.images.remove(ref)
            except (docker.errors.ImageNotFound, docker.errors.NotFound):
                pass
            except docker.errors.APIError as e:
                if e.status_code != 409:  # conflict: still used by a container
                    raise

        await self._call(remove)

    # --- containers ----------------------------------------------------------------------

    async def run_to_exit(self, spec: RunSpec, *, on_output: OutputCallback) -> int:
        """Run a one-off container until it exits; its exit code. It is always removed."""
        container = await self._create(lambda: self._run(spec))
        try:
            await self.follow(container.id or "", on_output)
            result = await self._call(lambda: container.wait())
            return int(result.get("StatusCode", -1))
        finally:
            with anyio.CancelScope(shield=True):
                await self.remove(container.id or "")

    async def start(self, spec: RunSpec) -> ContainerInfo:
        """Create and start the app's container; its state with the published host port."""

        def start() -> ContainerInfo:
            container = self._run(spec)
            container.reload()  # ports are known only once the container runs
            return _info(container)

        return await self._create(start)

    async def keep_running(self, container_id: str) -> None:
        """From now on, Docker restarts the container if it dies (and after a reboot)."""

        def update() -> None:
            # "always" rather than "unless-stopped": the node removes what it stops, so the
            # two differ in nothing here, and the SDK's types know only "always".
            self._client.api.update_container(container_id, restart_policy={"Name": "always"})

        await self._call(update)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's state, or None if it is gone."""

        def get() -> ContainerInfo | None:
            try:
                return _info(self._client.containers.get(container_id))
            except docker.errors.NotFound:
                return None

        return await self._call(get)

    async def wait_exit(self, container_id: str, within: float) -> int | None:
        """Wait up to ``within`` s for the container to stop: its exit code, or None."""

        def wait() -> int | None:
            try:
                result = self._client.api.wait(container_id, timeout=max(1, round(within)))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                return None
            except docker.errors.NotFound:
                return -1
            return int(result.get("StatusCode", -1))

        return await self._call(wait)

    async def tail(self, container_id: str, lines: int) -> list[str]:
        """The last ``lines`` lines the container wrote (stdout and stderr)."""

        def logs() -> list[str]:
            try:
                data = self._client.api.logs(container_id, tail=lines)
            except docker.errors.NotFound:
                return []
            return data.decode(errors="replace").splitlines()

        return await self._call(logs)

    async def follow(
        self, container_id: str, on_output: OutputCallback, *, since: datetime | None = None
    ) -> None:
        """Stream stdout and stderr from the container's start (or from ``since``) until it
        stops.

        The logs endpoint, not attach: attaching to a container that has just exited can
        hang, and the logs endpoint replays what was written before the call.
        """
        # A float: the SDK turns a datetime into whole seconds, which would send again up
        # to a second of lines that were sent before.
        after = since.timestamp() if since is not None else None

        async def one(stream: LogStream) -> None:
            def open_stream() -> CancellableStream[bytes]:
                return self._streams.logs(
                    container_id,
                    stdout=stream is LogStream.STDOUT,
                    stderr=stream is LogStream.STDERR,
                    stream=True,
                    follow=True,
                    since=after,
                )

            async def on_chunk(chunk: bytes) -> None:
                await on_output(stream, chunk.decode(errors="replace"))

            try:
                await self._pump(open_stream, on_chunk)
            except RuntimeFailure:
                return  # the container is gone: nothing more to read

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, LogStream.STDOUT)
            tg.start_soon(one, LogStream.STDERR)

    async def find(self, query: ContainerQuery) -> list[ContainerInfo]:
        """The containers whose labels match ``query``."""

        def find() -> list[ContainerInfo]:
            labels: str | list[str] | bool = [f"{k}={v}" for k, v in query.labels.items()]
            filters = {"label": labels}
            # The SDK lists, then inspects each container: one removed in between (the work
            # of another deployment ending) is not found, rather than failing the whole look-up.
            found = self._client.containers.list(
                all=not query.running_only, filters=filters, ignore_removed=True
            )
            return [_info(c) for c in found]

        return await self._call(find)

    async def remove(self, container_id: str, *, stop_timeout: float = 0) -> None:
        """Stop (gracefully for ``stop_timeout`` s) and remove the container; idempotent.

        Returns once the container is gone, also when another removal of it was under way.
        """

        def remove() -> None:
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while True:
                try:
                    container = self._client.containers.get(container_id)
                    if stop_timeout > 0 and container.status == "running":
                        container.stop(timeout=int(stop_timeout))
                    container.remove(force=True, v=True)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as e:
                    # 409: Docker refuses a second removal while one is under way (another
                    # task of this node, a person). The container still exists, and runs
                    # until that removal kills it, or for good if it fails: wait for it to
                    # go, and remove it again if it did not.
                    if e.status_code != 409 or time.monotonic() > deadline:
                        raise
                if self._removed(container_id, REMOVAL_WAIT):
                    return

        await self._call(remove)

    # --- plumbing ------------------------------------------------------------------------

    def _removed(self, container_id: str, within: int) -> bool:
        """Wait (blocking) up to ``within`` s for the container to be removed by whoever is
        removing it; whether it is gone."""
        try:
            result = self._client.api.wait(container_id, timeout=within, condition="removed")
        except docker.errors.NotFound:
            return True
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return False
        # The wait also ends when that removal fails, with the reason.
        error = result.get("Error")
        return not (error and error["Message"])

    def _run(self, spec: RunSpec) -> Container:
        # (address, None): a random free host port on that address (the stubs omit None).
        ports: dict[str, Any] | None = (
            {f"{spec.port}/tcp": (PUBLISH_HOST, None)} if spec.port is not None else None
        )
        memory = f"{spec.limits.memory_mb}m"
        return self._client.containers.run(
            spec.image,
            command=list(spec.command) if spec.command is not None else None,
            name=spec.name,
            detach=True,
            # An init process forwards SIGTERM and reaps zombies; without it `stop` waits
            # the whole timeout for apps that ignore signals as PID 1.
            init=True,
            environment=dict(spec.env),
            labels=dict(spec.labels),
            ports=ports,
            mem_limit=memory,
            memswap_limit=memory,  # no swap beyond the memory limit
            nano_cpus=int(spec.limits.cpus * 1e9),
            pids_limit=spec.limits.pids,
            security_opt=["no-new-privileges"],
        )

    async def _create(self, fn: Callable[[], T]) -> T:
        """`_call` for a call that creates a container: see `run_to_completion`."""
        return await run_to_completion(lambda: self._call(fn))

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run a blocking SDK call in a thread, turning SDK errors into `RuntimeFailure`."""
        try:
            return await anyio.to_thread.run_sync(fn)
        except docker.errors.DockerException as e:
            raise RuntimeFailure(_explain(e)) from None
        except requests.exceptions.RequestException as e:
            raise RuntimeFailure(f"the Docker engine did not answer: {e}") from None

    async def _pump(
        self,
        open_stream: Callable[[], CancellableStream[T]],
        on_item: Callable[[T], Coroutine[Any, Any, None]],
    ) -> None:
        """Read a stream in a thread, awaiting ``on_item`` on the loop for each item.

        Cancelling the caller closes the stream (which unblocks the thread and tells the
        daemon the client left) and returns at once.
        """
        opened: list[_Closable] = []
        stopped = threading.Event()

        def read() -> None:
            stream = open_stream()
            opened.append(stream)
            # The caller may have been cancelled while the stream was being opened.
            if stopped.is_set():
                stream.close()
                return
            for item in stream:
                if stopped.is_set():
                    break
                anyio.from_thread.run(on_item, item)

        try:
            await anyio.to_thread.run_sync(read, abandon_on_cancel=True, limiter=self._readers)
        except docker.errors.DockerException as e:
            raise RuntimeFailure(_explain(e)) from None
        except requests.exceptions.RequestException as e:
            raise RuntimeFailure(f"the Docker engine did not answer: {e}") from None
        except BaseException:
            stopped.set()
            for stream in opened:
                _close_quietly(stream)
            raise


def _close_quietly(stream: _Closable) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        stream.close()


async def run_to_completion(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Await ``call()``; should the caller be cancelled meanwhile, the cancellation goes on
    only once ``call()`` has ended (its outcome is dropped).

    Cancelling an asyncio task abandons the thread of its ``anyio.to_thread`` call, even in
    a shielded scope: a container being created would appear after the cancelled work's
    clean-up had looked for it, and run on, owned by nobody.
    """
    task = asyncio.ensure_future(call())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # looked at: the caller gets its cancellation, not this
        raise


def _info(container: Container) -> ContainerInfo:
    attrs: dict[str, Any] = container.attrs
    state = attrs.get("State") or {}
    network = attrs.get("NetworkSettings") or {}
    host_port: int | None = None
    for bindings in (network.get("Ports") or {}).values():
        for binding in bindings or ():
            if binding.get("HostIp") in (PUBLISH_HOST, "", "0.0.0.0"):  # noqa: S104
                host_port = int(binding["HostPort"])
                break
    networks = (network.get("Networks") or {}).values()
    address = network.get("IPAddress") or next(
        (n["IPAddress"] for n in networks if n.get("IPAddress")), None
    )
    running = bool(state.get("Running")) and not state.get("Restarting")
    restart = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or ""
    return ContainerInfo(
        id=container.id or "",
        name=(container.name or "").lstrip("/"),
        labels=dict(container.labels or {}),
        running=running,
        exit_code=None if running else state.get("ExitCode"),
        host_port=host_port,
        address=address or None,
        image=str((attrs.get("Config") or {}).get("Image") or ""),
        image_id=str(attrs.get("Image") or ""),
        kept_running=restart in ("always", "unless-stopped"),
        created=_time(attrs.get("Created")),
    )


def _image_info(image: Image) -> ImageInfo:
    attrs: dict[str, Any] = image.attrs
    created = _time(attrs.get("Created")) or datetime.min.replace(tzinfo=UTC)
    return ImageInfo(
        id=image.id or "",
        tags=tuple(image.tags),
        labels=dict(image.labels or {}),
        created=created,
        tagged=_time((attrs.get("Metadata") or {}).get("LastTagTime")),
    )


def _time(value: object) -> datetime | None:
    """A Docker timestamp (RFC 3339, nanoseconds), or None when unset or unreadable."""
    if not isinstance(value, str) or not value or value.startswith(_NEVER[:4]):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class StageImages:
    """Follows the classic builder's output to learn the image each build stage ends with."""

    def __init__(self) -> None:
        self._partial = ""
        self._stage: str | None = None
        self._index = -1
        self._last: str | None = None
        self._ends: dict[str, str] = {}

    def feed(self, chunk: str) -> None:
        """Read one chunk of output (lines may be split across chunks)."""
        *lines, self._partial = (self._partial + chunk).split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def ends(self) -> dict[str, str]:
        """Stage name (or index, for unnamed stages) -> id of the image it ended with."""
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        self._close()
        return dict(self._ends)

    def _line(self, line: str) -> None:
        if start := _FROM_STEP.match(line):
            self._close()
            self._index += 1
            self._stage = start.group(1) or str(self._index)
        elif made := _STEP_IMAGE.match(line):
            self._last = made.group(1)

    def _close(self) -> None:
        if self._stage is not None and self._last is not None:
            self._ends[self._stage] = self._last
        self._stage, self._last = None, None


def _explain(error: docker.errors.DockerException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation)
    return str(error)
