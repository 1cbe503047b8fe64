"""Real infrastructure for node tests: a Caddy of their own, requests through it, and the
removal of what a test node leaves in Docker.

Each test module gets its own Caddy on free loopback ports (admin API and HTTP), so that
tests and several nodes on one machine never share one. Apps are requested the way a user
reaches them: at ``127.0.0.1:<Caddy's port>`` with the app's host name in the ``Host``
header (``<app>.localhost`` does not resolve here).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio.to_thread
import docker
import docker.errors
import httpx

from shipwreck_node.dnsroutes import Unbound
from shipwreck_node.ports import LABEL_NODE
from shipwreck_node.proxy import CaddyProxy
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import load_settings
from tests.support.gitdaemon import free_port


@contextlib.contextmanager
def run_caddy(state_dir: Path) -> Iterator[CaddyProxy]:
    """Start a Caddy of its own (free ports, plain HTTP) until the block ends."""
    proxy = CaddyProxy(
        admin=f"127.0.0.1:{free_port()}",
        http_port=free_port(),
        state_dir=state_dir,
        dns_port=free_port(),
    )
    proxy.ensure_running()
    try:
        yield proxy
    finally:
        proxy.stop()


def stop_node_proxy(environment: Mapping[str, str]) -> None:
    """Stop the Caddy and the unbound of a node process with this environment, which a node
    leaves running when it is killed (or when it found them running at its start)."""
    with contextlib.suppress(httpx.HTTPError):  # Caddy may be gone already
        httpx.post(f"http://{environment['SHIPWRECK_PROXY_ADMIN']}/stop", timeout=5)
    settings = load_settings(NodeSettings, dict(environment))
    Unbound(port=settings.proxy_dns_port, state_dir=settings.proxy_dir).shut_down()


def get(port: int, url: str, timeout: float = 10) -> tuple[int, str]:
    """GET ``url`` (``http://<app>.<domain>[:port]/path``) through the Caddy on ``port``."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"Host": parts.netloc})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@dataclass
class Hammer:
    """Requests one URL through Caddy every ``interval`` seconds, in a thread, and keeps
    every answer: a status and body, or the error instead of an answer (status 0)."""

    port: int
    url: str
    interval: float = 0.02
    answers: list[tuple[int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _answered: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Hammer:
        self._thread = threading.Thread(target=self._run, name="hammer", daemon=True)
        self._thread.start()
        self.wait_until(lambda: bool(self.answers), "a first answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def wait_until(self, condition: Callable[[], bool], what: str, within: float = 30) -> None:
        """Block until ``condition`` holds (checked after every answer)."""
        with self._answered:
            if not self._answered.wait_for(condition, within):
                raise AssertionError(f"no {what} within {within:g} s: {self.answers[-5:]}")

    async def until(self, condition: Callable[[], bool], what: str, within: float = 30) -> None:
        """`wait_until` from async code (in a worker thread: the event loop keeps running)."""
        await anyio.to_thread.run_sync(lambda: self.wait_until(condition, what, within))

    def more(self, count: int) -> Callable[[], bool]:
        """A condition: ``count`` more answers than there are now."""
        target = len(self.answers) + count
        return lambda: len(self.answers) >= target

    def answered(self, body: str, times: int = 1) -> Callable[[], bool]:
        """A condition: ``body`` came back ``times`` times in a row, lately."""
        return lambda: self.answers[-times:] == [(200, body)] * times

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = get(self.port, self.url, timeout=5)
            except OSError as e:
                answer = (0, f"{type(e).__name__}: {e}")
            with self._answered:
                self.answers.append(answer)
                self._answered.notify_all()
            time.sleep(self.interval)  # the pace of a client, not a synchronisation

    @property
    def failures(self) -> list[tuple[int, str]]:
        """The answers that were not a 200."""
        return [a for a in self.answers if a[0] != 200]

    @property
    def bodies(self) -> list[str]:
        """The distinct bodies of the 200 answers, in the order they first appeared."""
        seen: list[str] = []
        for status, body in self.answers:
            if status == 200 and (not seen or seen[-1] != body):
                seen.append(body)
        return seen


def remove_node_leftovers(engine: docker.DockerClient, node_id: str) -> None:
    """Remove the containers and images a test node made (by its label), with the
    dependency-stage tags of its builds (those images carry the base image's labels)."""
    label = f"{LABEL_NODE}={node_id}"
    for container in engine.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for image in engine.images.list(filters={"label": label}):
        for tag in image.tags:
            repository, _, deployment = tag.rpartition(":")
            deps = repository.replace("shipwreck/app-", "shipwreck/deps-", 1)
            for name in (tag, f"{deps}:{deployment}"):
                with contextlib.suppress(docker.errors.ImageNotFound):
                    engine.images.remove(name, force=True)
