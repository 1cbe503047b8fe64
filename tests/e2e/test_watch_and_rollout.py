"""Watch a branch and roll out with zero downtime behind the node's Caddy: polling,
webhooks, a broken commit, rollback. Every service is its own process, on real RabbitMQ,
PostgreSQL, Docker, Caddy and a git daemon on loopback."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.test_deploy_git_url import Api, node_settings, start_api, wait_for_nodes
from tests.support.gitdaemon import GitServer
from tests.support.platform import Platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

SECRET = "e2e-webhook-secret"
APP = "python-hello"


def _manifest(greeting: str) -> str:
    return (
        '[app]\nname = "python-hello"\n\n[config]\nlang = "python3"\nrun = "python3 app.py"\n'
        f'port = 8000\nhealthcheck = "/health"\n\n[env-vars]\nGREETING = "{greeting}"\n'
    )


@dataclass
class Site:
    """Requests the app through Caddy every 20 ms, recording every answer."""

    port: int
    host: str
    answers: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def get(self) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/", headers={"Host": self.host})
            response = connection.getresponse()
            return response.status, response.read().decode()
        except OSError as e:
            return 0, f"{type(e).__name__}: {e}"
        finally:
            connection.close()

    def hammer(self) -> threading.Thread:
        def loop() -> None:
            while not self.stop.is_set():
                self.answers.append(self.get())
                time.sleep(0.02)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def failures(self) -> list[tuple[int, str]]:
        return [a for a in self.answers if a[0] != 200]


@dataclass
class Rig:
    api: Api
    git: GitServer
    platform: Platform
    proxy_port: int


@pytest.fixture
def rig(platform: Platform, git_server: GitServer) -> Iterator[Rig]:
    node = node_settings(platform, "rollout")
    platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
    platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    platform.start(
        "watcher",
        "shipwreck_watcher",
        "watcher ready",
        SHIPWRECK_WATCH_INTERVAL="3",
        SHIPWRECK_WATCH_JITTER="0.1",
    )
    platform.start("node", "shipwreck_node", "node ready", **node)
    port = int(node["SHIPWRECK_PROXY_HTTP_PORT"])
    api = start_api(platform)
    wait_for_nodes(api, 1)
    yield Rig(api, git_server, platform, port)
    api.client.close()


def _running(rig: Rig, deployment_id: str) -> dict[str, object]:
    d = rig.api.wait_terminal(deployment_id)
    assert d["status"] == "RUNNING", (d, rig.platform.log_tail("node"))
    return d


def _wait_for_new_deployment(rig: Rig, known: set[str], seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ids = {d["id"] for d in rig.api.gql("{ deployments { id } }")["deployments"]}
        new = ids - known
        if new:
            return str(new.pop())
        time.sleep(0.2)
    raise AssertionError(f"no new deployment within {seconds}s")


def _current(rig: Rig) -> str:
    app = rig.api.gql('{ app(name: "python-hello") { current { id } } }')["app"]
    return str(app["current"]["id"])


def test_watched_commits_roll_out_without_downtime_and_broken_ones_never_replace(
    rig: Rig,
) -> None:
    rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v1")})
    first = _running(rig, rig.api.deploy(rig.git.url(APP)))
    site = Site(rig.proxy_port, f"{APP}.localhost")
    assert site.get() == (200, "v1: 1,234,567 users\n")
    thread = site.hammer()
    try:
        # A new commit is found by polling and rolled out (trigger WATCH).
        known = {str(first["id"])}
        rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v2")})
        second_id = _wait_for_new_deployment(rig, known)
        second = _running(rig, second_id)
        assert second["trigger"] == "WATCH"
        deadline = time.monotonic() + 10
        while site.answers[-1][1] != "v2: 1,234,567 users\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert site.answers[-1] == (200, "v2: 1,234,567 users\n")

        # A broken commit ends ERRORED; v2 keeps serving and stays current.
        known.add(second_id)
        rig.git.publish_app(
            APP,
            APP,
            overrides={
                "Shipwreck.toml": _manifest("v3"),
                "app.py": "raise SystemExit('broken on purpose')\n",
            },
        )
        broken = rig.api.wait_terminal(_wait_for_new_deployment(rig, known))
        assert broken["status"] == "ERRORED"
        assert broken["error"]
        assert _current(rig) == second_id
        time.sleep(0.5)
    finally:
        site.stop.set()
        thread.join()
    assert site.failures() == []
    assert site.answers[-1] == (200, "v2: 1,234,567 users\n")
    bodies = [body for _, body in site.answers]
    assert bodies.index("v2: 1,234,567 users\n") > 0


def _github_push(rig: Rig, delivery: str, commit: str, *, secret: str = SECRET) -> int:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "after": commit,
            "repository": {"clone_url": rig.git.url(APP)},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    response = rig.api.client.post(
        "/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
            "Content-Type": "application/json",
        },
    )
    return response.status_code


@pytest.fixture
def hooked(platform: Platform, git_server: GitServer) -> Iterator[Rig]:
    node = node_settings(platform, "hooked")
    platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
    platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    # Polling far too slow to matter: only the webhook can trigger within the test.
    platform.start("watcher", "shipwreck_watcher", "watcher ready", SHIPWRECK_WATCH_INTERVAL="3600")
    platform.start("node", "shipwreck_node", "node ready", **node)
    port = int(node["SHIPWRECK_PROXY_HTTP_PORT"])
    from tests.support.gitdaemon import free_port

    api_port = free_port()
    platform.start(
        "api",
        "shipwreck_api",
        "api ready",
        SHIPWRECK_API_PORT=str(api_port),
        SHIPWRECK_API_TOKEN="e2e-token",
        SHIPWRECK_WEBHOOK_SECRET=SECRET,
    )
    api = Api(api_port)
    wait_for_nodes(api, 1)
    yield Rig(api, git_server, platform, port)
    api.client.close()


def test_a_signed_webhook_deploys_at_once_and_rollback_sticks(hooked: Rig) -> None:
    rig = hooked
    rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v1")})
    first = _running(rig, rig.api.deploy(rig.git.url(APP)))
    # The watcher records its baseline from a first poll, staggered within the interval;
    # the webhook path does not wait for it.
    commit = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v2")})
    assert _github_push(rig, "bad-1", commit, secret="wrong") == 401
    assert _github_push(rig, "good-1", commit) == 202
    second_id = _wait_for_new_deployment(rig, {str(first["id"])}, seconds=30)
    second = _running(rig, second_id)
    assert second["trigger"] == "WEBHOOK"
    assert _github_push(rig, "good-1", commit) == 202  # the same delivery again
    time.sleep(2)
    ids = {d["id"] for d in rig.api.gql("{ deployments { id } }")["deployments"]}
    assert ids == {str(first["id"]), second_id}

    site = Site(rig.proxy_port, f"{APP}.localhost")
    thread = site.hammer()
    try:
        back = rig.api.gql(
            "mutation($app: String!, $id: ID!) { rollback(app: $app, deploymentId: $id) { id } }",
            app=APP,
            id=str(first["id"]),
        )["rollback"]["id"]
        rolled = _running(rig, str(back))
        assert rolled["trigger"] == "ROLLBACK"
        deadline = time.monotonic() + 10
        while site.answers[-1][1] != "v1: 1,234,567 users\n" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        site.stop.set()
        thread.join()
    assert site.failures() == []
    assert site.answers[-1] == (200, "v1: 1,234,567 users\n")
    assert _current(rig) == str(back)
