"""Watch a branch and roll out with zero downtime behind the node's Caddy: polling,
webhooks, a broken commit, rollback (which the next poll or webhook does not undo), and the
trigger ledger that says why. Every service is its own process, on real RabbitMQ,
PostgreSQL, Docker, Caddy and a git daemon on loopback."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.test_deploy_git_url import Api, node_settings, start_api, wait_for_nodes
from tests.support.gitdaemon import GitServer
from tests.support.platform import Platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

SECRET = "e2e-webhook-secret"
APP = "python-hello"
POLL = 2.0  # seconds between the watcher's checks of a branch
LEDGER = """query($app: String!) { app(name: $app) { ledger(limit: 100) {
  at kind accepted reason commit trigger deliveryId provider repoUrl branch apps position } } }"""


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
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        platform.start(
            "watcher",
            "shipwreck_watcher",
            "watcher ready",
            SHIPWRECK_WATCH_INTERVAL=str(POLL),
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


def _deployment_ids(api: Api) -> set[str]:
    return {d["id"] for d in api.gql("{ deployments { id } }")["deployments"]}


def _ledger(api: Api) -> list[dict[str, Any]]:
    entries = _ledger_if_known(api)
    assert entries is not None, f"the api does not know {APP}"
    return entries


def _ledger_if_known(api: Api) -> list[dict[str, Any]] | None:
    """The app's ledger, or None while the api does not know the app (an api started
    later knows it once the orchestrator's replay has reached it)."""
    app = api.gql(LEDGER, app=APP)["app"]
    if app is None:
        return None
    entries: list[dict[str, Any]] = app["ledger"]
    return entries


def _ledger_until(api: Api, done: Any, seconds: float = 30) -> list[dict[str, Any]]:
    """The app's ledger once ``done(entries)`` holds (the watcher records, then relays)."""
    deadline = time.monotonic() + seconds
    entries = _ledger_if_known(api)
    while (entries is None or not done(entries)) and time.monotonic() < deadline:
        time.sleep(0.2)
        entries = _ledger_if_known(api)
    assert entries is not None, f"the api still does not know {APP}"
    assert done(entries), entries
    return entries


def _roll_back(rig: Rig, to: str) -> str:
    back = rig.api.gql(
        "mutation($app: String!, $id: ID!) { rollback(app: $app, deploymentId: $id) { id } }",
        app=APP,
        id=to,
    )["rollback"]["id"]
    rolled = _running(rig, str(back))
    assert rolled["trigger"] == "ROLLBACK"
    return str(back)


def _serves(site: Site, body: str) -> None:
    deadline = time.monotonic() + 10
    while site.answers[-1][1] != body and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.answers[-1] == (200, body)


def test_watched_commits_roll_out_without_downtime_broken_ones_never_replace_and_rollback_sticks(
    rig: Rig,
) -> None:
    v1 = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v1")})
    first = _running(rig, rig.api.deploy(rig.git.url(APP)))
    # The commit the first deployment built is the watcher's baseline.
    _ledger_until(
        rig.api,
        lambda entries: any(e["kind"] == "COMMIT_OBSERVED" and e["commit"] == v1 for e in entries),
    )
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
        broken_id = _wait_for_new_deployment(rig, known)
        broken = rig.api.wait_terminal(broken_id)
        assert broken["status"] == "ERRORED"
        assert broken["error"]
        assert _current(rig) == second_id
        known.add(broken_id)
        time.sleep(0.5)
        served_v2 = len(site.answers)

        # Roll back to v1 (its image again, no rebuild), still with no failed request.
        back = _roll_back(rig, str(first["id"]))
        known.add(back)
        _serves(site, "v1: 1,234,567 users\n")
        # The ledger records the pin: v1 runs, the branch head (the broken commit) stays
        # undeployed until the branch moves.
        pin = _ledger_until(
            rig.api, lambda entries: any(e["kind"] == "ROLLBACK_PINNED" for e in entries)
        )[-1]
        assert (pin["kind"], pin["commit"], pin["trigger"], pin["apps"]) == (
            "ROLLBACK_PINNED",
            first["commit"],
            "ROLLBACK",
            [APP],
        )
        assert pin["reason"] == (
            f"{APP} rolled back to {str(first['commit'])[:12]}: the head "
            f"{str(broken['commit'])[:12]} is not deployed again until the branch moves"
        )
        # Several polls later, nothing has undone the rollback.
        time.sleep(4 * POLL)
        assert _deployment_ids(rig.api) == known
        assert _current(rig) == back
        assert site.answers[-1] == (200, "v1: 1,234,567 users\n")

        # The next commit deploys as usual, found by polling.
        v4 = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v4")})
        fourth = _running(rig, _wait_for_new_deployment(rig, known))
        assert (fourth["trigger"], fourth["commit"]) == ("WATCH", v4)
        _serves(site, "v4: 1,234,567 users\n")
        assert _current(rig) == fourth["id"]
    finally:
        site.stop.set()
        thread.join()
    assert site.failures() == []
    bodies = [body for _, body in site.answers]
    assert bodies.index("v2: 1,234,567 users\n") > 0
    # v2 served until the rollback took the route, then v1 until v4 did.
    runs = [body for body, _ in itertools.groupby(bodies[served_v2:])]
    assert runs == ["v2: 1,234,567 users\n", "v1: 1,234,567 users\n", "v4: 1,234,567 users\n"]
    ledger = _ledger_until(rig.api, lambda entries: entries[-1]["commit"] == v4)
    assert [e["kind"] for e in ledger][-2:] == ["ROLLBACK_PINNED", "COMMIT_OBSERVED"]


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
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        # Polling far too slow to matter: only the webhook can trigger within the test.
        platform.start(
            "watcher", "shipwreck_watcher", "watcher ready", SHIPWRECK_WATCH_INTERVAL="3600"
        )
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


def test_a_commit_pushed_while_the_first_deployment_builds_is_deployed_next(rig: Rig) -> None:
    """Whether the watcher's first check comes before or after the push, the commit the
    first deployment built is the baseline, so the pushed commit is a change."""
    v1 = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v1")})
    first_id = rig.api.deploy(rig.git.url(APP))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        built = rig.api.gql("query($id: ID!) { deployment(id: $id) { commit } }", id=first_id)
        if built["deployment"]["commit"]:
            break
        time.sleep(0.05)
    assert built["deployment"]["commit"] == v1
    v2 = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v2")})
    first = rig.api.wait_terminal(first_id)
    # RUNNING, or already SUPERSEDED when the check for v2 came soon enough.
    assert (first["status"], first["commit"]) in {("RUNNING", v1), ("SUPERSEDED", v1)}, first
    second = _running(rig, _wait_for_new_deployment(rig, {first_id}, seconds=60))
    assert (second["trigger"], second["commit"]) == ("WATCH", v2)
    assert _current(rig) == second["id"]
    entries = _ledger_until(
        rig.api, lambda entries: any(e["reason"].startswith("new commit") for e in entries)
    )
    baselines = [e for e in entries if e["reason"].startswith("baseline: ")]
    assert [(e["commit"], e["kind"]) for e in baselines] == [(v1, "COMMIT_OBSERVED")]


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
    assert _deployment_ids(rig.api) == {str(first["id"]), second_id}

    # The ledger says what became of each delivery, and why.
    hooks = [
        e
        for e in _ledger_until(rig.api, lambda entries: len(_deliveries(entries)) == 3)
        if e["deliveryId"]
    ]
    assert [(e["deliveryId"], e["kind"], e["accepted"], e["provider"]) for e in hooks] == [
        ("bad-1", "WEBHOOK_REJECTED", False, "github"),
        ("good-1", "WEBHOOK_ACCEPTED", True, "github"),
        ("good-1", "WEBHOOK_REJECTED", False, "github"),
    ]
    assert hooks[0]["reason"].startswith("bad signature")
    assert [e["reason"] for e in hooks[1:]] == ["new commit", "duplicate delivery"]
    assert all(e["commit"] == commit and e["trigger"] == "WEBHOOK" for e in hooks)

    site = Site(rig.proxy_port, f"{APP}.localhost")
    thread = site.hammer()
    try:
        back = _roll_back(rig, str(first["id"]))
        _serves(site, "v1: 1,234,567 users\n")
    finally:
        site.stop.set()
        thread.join()
    assert site.failures() == []
    assert site.answers[-1] == (200, "v1: 1,234,567 users\n")
    assert _current(rig) == back

    # The Git host announcing the head again (a new delivery) does not undo the rollback.
    _ledger_until(rig.api, lambda entries: entries[-1]["kind"] == "ROLLBACK_PINNED")
    assert _github_push(rig, "good-2", commit) == 202
    again = _ledger_until(rig.api, lambda entries: entries[-1]["deliveryId"] == "good-2")[-1]
    assert (again["kind"], again["reason"]) == (
        "WEBHOOK_REJECTED",
        f"commit pinned by a rollback ({APP} runs {str(first['commit'])[:12]})",
    )
    assert _deployment_ids(rig.api) == {str(first["id"]), second_id, back}
    assert _current(rig) == back

    # A commit deployed by hand that no check or webhook announced, then rolled back from:
    # the Git host announcing it later does not deploy it again either.
    v3 = rig.git.publish_app(APP, APP, overrides={"Shipwreck.toml": _manifest("v3")})
    by_hand = _running(rig, rig.api.deploy(rig.git.url(APP)))
    assert (by_hand["trigger"], by_hand["commit"]) == ("MANUAL", v3)
    back_again = _roll_back(rig, str(first["id"]))
    _ledger_until(
        rig.api,
        lambda entries: [e["kind"] for e in entries].count("ROLLBACK_PINNED") == 2,
    )
    assert _github_push(rig, "good-3", v3) == 202
    held = _ledger_until(rig.api, lambda entries: entries[-1]["deliveryId"] == "good-3")[-1]
    assert (held["kind"], held["reason"]) == (
        "WEBHOOK_REJECTED",
        f"commit pinned by a rollback ({APP} runs {str(first['commit'])[:12]})",
    )
    time.sleep(1)
    known = {str(first["id"]), second_id, back, str(by_hand["id"]), back_again}
    assert _deployment_ids(rig.api) == known
    assert _current(rig) == back_again

    # An api started later, and a rebuilt one, show the same ledger (replayed by the watcher).
    ledger = _ledger(rig.api)
    later = start_api(rig.platform, "api-later")
    try:
        assert _ledger_until(later, lambda entries: entries == ledger) == ledger
    finally:
        later.client.close()
    rebuilt = rig.api.gql(
        "mutation { rebuildReadModel { complete ledgerComplete after { ledgerEntries } } }"
    )["rebuildReadModel"]
    assert rebuilt == {
        "complete": True,
        "ledgerComplete": True,
        "after": {"ledgerEntries": len(ledger)},
    }
    assert _ledger(rig.api) == ledger


def _deliveries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["deliveryId"]]
