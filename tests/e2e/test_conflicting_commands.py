"""Fifty conflicting commands on one app at once: deploys, redeploys, rollbacks, cancels of
deployments in progress (some requested by the others a moment before, some racing their
own success report), and a few that cannot be applied. Each is applied or rejected with a
clean GraphQL error, and the app never has two RUNNING deployments: not in what the api
shows meanwhile, not in the stored events. The app answers through its route throughout,
and at the end one deployment runs, in one container, and serves through the route.

Every service is its own process, on real RabbitMQ, PostgreSQL, Docker, Caddy and a git
daemon on loopback, driven through the public GraphQL API.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker
import httpx
import pytest

from shipwreck_contracts import IN_PROGRESS_STATUSES
from shipwreck_node.ports import LABEL_APP, LABEL_DEPLOYMENT, LABEL_NODE
from tests.e2e.test_deploy_git_url import TOKEN, Api, node_settings, start_api, wait_for_nodes
from tests.e2e.test_watch_and_rollout import Site
from tests.support.gitdaemon import GitServer
from tests.support.platform import Platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

IN_PROGRESS = {status.value for status in IN_PROGRESS_STATUSES}
CLIENT_ERRORS = {"NOT_FOUND", "REFUSED", "BAD_REQUEST"}
# The orchestrator's events that move a deployment into RUNNING, and out of it.
INTO_RUNNING = "deployment.running.v1"
OUT_OF_RUNNING = {
    "deployment.superseded.v1",
    "deployment.stopped.v1",
    "deployment.errored.v1",
    "deployment.cancelled.v1",
    "deployment.initialized.v1",  # placed again (its node or its container was lost)
}
PATIENCE = 300.0  # seconds for every deployment to end, on a loaded two-core machine

SAMPLE = """query($app: String!) {
  deployments(app: $app, first: 500) { id status }
  app(name: $app) { current { id } } }"""
FINAL = """query($app: String!) {
  deployments(app: $app, first: 500) {
    id status commit trigger error
    history { status at message }
    events { type position } }
  app(name: $app) { url current { id } } }"""
DEPLOY = "mutation($url: String!) { deploy(input: {repoUrl: $url}) { id status } }"
REDEPLOY = "mutation($app: String!) { redeploy(app: $app) { id status } }"
ROLLBACK = """mutation($app: String!, $id: ID!) {
  rollback(app: $app, deploymentId: $id) { id status trigger } }"""
CANCEL = "mutation($id: ID!) { cancelDeployment(id: $id) { id status } }"


@dataclass
class Shot:
    """One mutation fired at the api, and what came back."""

    kind: str
    mutation: str
    variables: dict[str, Any]
    names: str | None = None
    """What an error must name (the id or name that was wrong)."""
    invalid: bool = False
    """Cannot be applied whenever it arrives: must be rejected."""
    cancels: int | None = None
    """For a cancel: the n-th deployment requested by the other mutations (0-based)."""
    when: str | None = None
    """For a cancel: fired once that deployment is STARTING, or has taken the app's route
    (racing its success report), rather than as soon as it is requested."""
    body: dict[str, Any] | None = None
    failure: str | None = None

    @property
    def result(self) -> dict[str, Any] | None:
        data = (self.body or {}).get("data") or {}
        found = next(iter(data.values()), None)
        return found if isinstance(found, dict) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = (self.body or {}).get("errors") or []
        return errors

    def problem(self) -> str | None:
        """What is wrong with the answer, if anything: no answer, an internal error, an
        error without a code or one that does not say what was wrong, or an answer to a
        mutation that had to be rejected."""
        if self.failure is not None:
            return self.failure
        if self.result is None and not self.errors:
            return f"neither a result nor an error: {self.body}"
        for error in self.errors:
            code = (error.get("extensions") or {}).get("code")
            if code not in CLIENT_ERRORS:
                return f"error without a client error code: {error}"
            if self.names is None or self.names not in error.get("message", ""):
                return f"error that does not name {self.names!r}: {error}"
        if self.invalid and not self.errors:
            return f"accepted, but it cannot be applied: {self.result}"
        if not self.invalid and self.kind != "cancel" and self.result is None:
            return f"a valid request was rejected: {self.errors}"
        return None


@dataclass
class Requested:
    """Ids of the deployments the mutations have created, in the order they were answered."""

    ids: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, deployment_id: str) -> None:
        with self.changed:
            self.ids.append(deployment_id)
            self.changed.notify_all()

    def nth(self, n: int, within: float) -> str | None:
        with self.changed:
            self.changed.wait_for(lambda: len(self.ids) > n, timeout=within)
            return self.ids[n] if len(self.ids) > n else None


@dataclass
class Sampler:
    """Reads the app's deployments and its current one every 50 ms, keeping each sample
    that breaks the invariant: two RUNNING, or a current one that is not the RUNNING one."""

    client: httpx.Client
    app: str
    samples: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> threading.Thread:
        def loop() -> None:
            while not self.stop.is_set():
                self.sample()
                self.stop.wait(0.05)

        thread = threading.Thread(target=loop, name="sampler", daemon=True)
        thread.start()
        return thread

    def sample(self) -> None:
        try:
            response = self.client.post(
                "/graphql", json={"query": SAMPLE, "variables": {"app": self.app}}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as e:
            self.failures.append(f"{type(e).__name__}: {e}")
            return
        if response.status_code != 200 or body.get("errors"):
            self.failures.append(f"HTTP {response.status_code}: {body}")
            return
        self.samples += 1
        running = [d["id"] for d in body["data"]["deployments"] if d["status"] == "RUNNING"]
        current = (body["data"]["app"] or {}).get("current")
        current_id = current["id"] if current else None
        if len(running) > 1 or current_id != (running[0] if running else None):
            self.violations.append({"running": running, "current": current_id})


@dataclass
class Rig:
    api: Api
    git: GitServer
    platform: Platform
    proxy_port: int
    node_id: str


@pytest.fixture
def rig(platform: Platform, git_server: GitServer) -> Iterator[Rig]:
    # A name of its own: the nodes of concurrent test runs share one Docker engine.
    node = node_settings(platform, f"clash-{uuid.uuid4().hex[:8]}")
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        platform.start("node", "shipwreck_node", "node ready", **node)
        api = start_api(platform)
    wait_for_nodes(api, 1)
    port = int(node["SHIPWRECK_PROXY_HTTP_PORT"])
    yield Rig(api, git_server, platform, port, platform.node_ids[-1])
    api.client.close()


def _shots(app: str, url: str, v1: str) -> list[Shot]:
    """Fifty mutations: 10 deploys of the URL, 10 redeploys, 8 rollbacks to v1, 14 cancels
    of deployments the others request (as soon as requested, once STARTING, or once routed),
    and 8 that cannot be applied."""
    shots = [Shot("deploy", DEPLOY, {"url": url}) for _ in range(10)]
    shots += [Shot("redeploy", REDEPLOY, {"app": app}) for _ in range(10)]
    shots += [Shot("rollback", ROLLBACK, {"app": app, "id": v1}) for _ in range(8)]
    shots += [
        Shot("cancel", CANCEL, {}, cancels=n, when=[None, "STARTING", None, "ROUTED"][n % 4])
        for n in range(14)
    ]
    unknown = str(uuid.uuid4())
    gone = f"{app}-gone"
    invalid = [
        Shot("rollback", ROLLBACK, {"app": app, "id": unknown}, names=unknown),
        Shot("rollback", ROLLBACK, {"app": app, "id": "v1"}, names="'v1'"),
        # v1 has finished deploying (RUNNING, then SUPERSEDED or still RUNNING).
        Shot("cancel", CANCEL, {"id": v1}, names=v1),
        Shot("cancel", CANCEL, {"id": v1}, names=v1),
        Shot("cancel", CANCEL, {"id": unknown}, names=unknown),
        Shot("redeploy", REDEPLOY, {"app": gone}, names=gone),
        Shot("rollback", ROLLBACK, {"app": gone, "id": v1}, names=gone),
        Shot("deploy", DEPLOY, {"url": "file:///etc/passwd"}, names="'file://'"),
    ]
    for shot in invalid:
        shot.invalid = True
    return shots + invalid


def _fire_all(port: int, shots: list[Shot]) -> None:
    """Fire every shot from its own thread, all at once; a cancel once the deployment it
    cancels has been requested (and is as far as the cancel waits for)."""
    requested = Requested()
    start = threading.Barrier(len(shots))
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=60,
        headers={"Authorization": f"Bearer {TOKEN}"},
        limits=httpx.Limits(max_connections=len(shots) + 10),
    )

    def fire(shot: Shot) -> None:
        start.wait()
        if shot.cancels is not None:
            picked = requested.nth(shot.cancels, within=60)
            if picked is None:
                shot.failure = f"deployment #{shot.cancels + 1} to cancel was never requested"
                return
            shot.variables["id"] = shot.names = picked
            if shot.when is not None:
                _until(client, picked, shot.when)
        try:
            response = client.post(
                "/graphql", json={"query": shot.mutation, "variables": shot.variables}
            )
            shot.body = response.json()
            if response.status_code != 200:
                shot.failure = f"HTTP {response.status_code}: {response.text}"
        except (httpx.HTTPError, ValueError) as e:
            shot.failure = f"{type(e).__name__}: {e}"
            return
        if shot.kind != "cancel" and shot.result is not None:
            requested.add(str(shot.result["id"]))

    threads = [threading.Thread(target=fire, args=(s,), daemon=True) for s in shots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    client.close()
    assert not any(t.is_alive() for t in threads), "a mutation did not return within 120 s"


def _until(client: httpx.Client, deployment_id: str, when: str) -> None:
    """Wait until the deployment is STARTING (its container's health is being checked), or
    its log says it took the app's route (its success report is on its way), or it is past
    that point."""
    query = "query($id: ID!) { deployment(id: $id) { status logs { text } } }"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.post(
            "/graphql", json={"query": query, "variables": {"id": deployment_id}}
        )
        found = (response.json().get("data") or {}).get("deployment") or {}
        status = found.get("status")
        if status not in IN_PROGRESS:
            return
        if when == "STARTING" and status == "STARTING":
            return
        if when == "ROUTED" and any(line["text"].startswith("routed ") for line in found["logs"]):
            return
        time.sleep(0.02)


def _settled(api: Api, app: str) -> dict[str, Any]:
    """The app and its deployments once none of them is in progress any more."""
    deadline = time.monotonic() + PATIENCE
    while True:
        data = api.gql(FINAL, app=app)
        busy = [d for d in data["deployments"] if d["status"] in IN_PROGRESS]
        if not busy:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"still in progress after {PATIENCE:g} s: {busy}")
        time.sleep(0.5)


def _running_in_log(deployments: list[dict[str, Any]]) -> list[tuple[int, set[str]]]:
    """Fold the stored events of every deployment in log order: each position after which
    more than one deployment was RUNNING, with those deployments."""
    events = sorted(
        (event["position"], event["type"], d["id"]) for d in deployments for event in d["events"]
    )
    running: set[str] = set()
    found = []
    for position, kind, deployment_id in events:
        if kind == INTO_RUNNING:
            running.add(deployment_id)
        elif kind in OUT_OF_RUNNING:
            running.discard(deployment_id)
        if len(running) > 1:
            found.append((position, set(running)))
    return found


def _overlapping_runs(deployments: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of deployments whose RUNNING spells (from their histories' times) overlap.

    A spell runs from the entry into RUNNING to the next entry out of it. Entries that
    change no status (a refused cancel) are skipped: their time is the orchestrator's when
    it refused, while the status changes carry the node's time of each takeover.
    """
    spells: list[tuple[datetime, datetime, str]] = []
    for d in deployments:
        history = d["history"]
        changes = [
            e for i, e in enumerate(history) if i == 0 or e["status"] != history[i - 1]["status"]
        ]
        for i, entry in enumerate(changes):
            if entry["status"] != "RUNNING":
                continue
            since = datetime.fromisoformat(entry["at"])
            until = (
                datetime.fromisoformat(changes[i + 1]["at"])
                if i + 1 < len(changes)
                else datetime.max.replace(tzinfo=since.tzinfo)
            )
            spells.append((since, until, d["id"]))
    return [
        (a[2], b[2])
        for i, a in enumerate(spells)
        for b in spells[i + 1 :]
        if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]
    ]


def _app_containers(engine: docker.DockerClient, rig: Rig, app: str) -> list[str]:
    """The deployments whose app containers run on the node (one label value each)."""
    labels = [f"{LABEL_APP}={app}", f"{LABEL_NODE}={rig.node_id}"]
    # The low-level listing: the high-level one inspects each container, and trips over
    # those removed in between.
    containers = engine.api.containers(filters={"label": labels})
    return [str(c["Labels"].get(LABEL_DEPLOYMENT)) for c in containers]


def _one_container(engine: docker.DockerClient, rig: Rig, app: str) -> list[str]:
    # Superseded containers are drained (SHIPWRECK_DRAIN_SECONDS) before they stop.
    deadline = time.monotonic() + 60
    found = _app_containers(engine, rig, app)
    while len(found) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        found = _app_containers(engine, rig, app)
    return found


def _get(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_fifty_conflicting_commands_are_each_applied_or_rejected_and_one_deployment_runs(
    rig: Rig,
) -> None:
    app = f"clash-{uuid.uuid4().hex[:6]}"
    versions = {rig.git.publish_app(app, "python-version", overrides={"VERSION": "v1\n"}): "v1"}
    first = rig.api.wait_terminal(rig.api.deploy(rig.git.url(app)))
    assert first["status"] == "RUNNING", (first, rig.platform.log_tail("node"))
    v1 = str(first["id"])
    for version in ("v2", "v3"):
        commit = rig.git.publish_app(app, "python-version", overrides={"VERSION": f"{version}\n"})
        versions[commit] = version

    shots = _shots(app, rig.git.url(app), v1)
    sampler = Sampler(rig.api.client, app)
    site = Site(rig.proxy_port, f"{app}.localhost")
    threads = [sampler.run(), site.hammer()]
    try:
        _fire_all(rig.api.client.base_url.port or 80, shots)
        final = _settled(rig.api, app)
    finally:
        sampler.stop.set()
        site.stop.set()
        for thread in threads:
            thread.join()

    # Every mutation was answered: a result, or an error with a code that says what was wrong.
    problems = [(s.kind, s.variables, s.problem()) for s in shots if s.problem() is not None]
    assert problems == [], problems

    # The app answered through its route throughout (zero downtime).
    assert site.failures() == []
    assert len(site.answers) > 10

    # What the api showed throughout, and the stored events: never two RUNNING at once.
    assert sampler.failures == []
    assert sampler.samples > 10
    assert sampler.violations == []
    deployments = final["deployments"]
    assert _running_in_log(deployments) == []
    assert _overlapping_runs(deployments) == []

    # Everything ended; one deployment runs and is the app's current one.
    statuses = Counter(d["status"] for d in deployments)
    running = [d for d in deployments if d["status"] == "RUNNING"]
    assert len(running) == 1, statuses
    assert final["app"]["current"] == {"id": running[0]["id"]}
    # Only a cancel cancels; an accepted one cancels unless the deployment had finished
    # deploying by the time it arrived, and it never cancels one that has.
    by_id = {d["id"]: d for d in deployments}
    asked = {s.variables["id"] for s in shots if s.kind == "cancel" and s.result is not None}
    assert {d["id"] for d in deployments if d["status"] == "CANCELLED"} <= asked
    for deployment_id in asked:
        d = by_id[deployment_id]
        ran = "RUNNING" in [h["status"] for h in d["history"]]
        assert (d["status"] == "CANCELLED") != ran, d
    rollbacks = [d for d in deployments if d["trigger"] == "ROLLBACK"]
    assert len(rollbacks) == 8
    assert {d["commit"] for d in rollbacks} == {first["commit"]}

    # One container of the app runs, the RUNNING deployment's, and serves through the route.
    engine = docker.from_env()
    try:
        containers = _one_container(engine, rig, app)
        assert containers == [running[0]["id"]], rig.platform.log_tail("node")
    finally:
        engine.close()
    body = f"{versions[running[0]['commit']]}\n"
    assert _get(rig.proxy_port, f"{app}.localhost") == (200, body)
