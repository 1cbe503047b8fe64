"""Deploy a Git URL end to end: every service as its own process, on real RabbitMQ,
PostgreSQL, Docker and a git daemon on loopback, driven through the public GraphQL API."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.gitdaemon import GitServer, free_port
from tests.support.graphql_ws import subscribe
from tests.support.platform import Platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

TOKEN = "e2e-token"
TERMINAL = {"RUNNING", "ERRORED", "CANCELLED", "SUPERSEDED", "STOPPED"}
DEPLOYMENT = "id app status commit node url error trigger history { status message }"


class Api:
    """A GraphQL client for the platform's api."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        )

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def deploy(self, url: str, branch: str = "main") -> str:
        data = self.gql(
            "mutation($url: String!, $branch: String!) {"
            " deploy(input: {repoUrl: $url, branch: $branch}) { id status } }",
            url=url,
            branch=branch,
        )
        assert data["deploy"]["status"] == "REQUESTED"
        return str(data["deploy"]["id"])

    def wait_terminal(self, deployment_id: str, seconds: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.gql(
                f"query($id: ID!) {{ deployment(id: $id) {{ {DEPLOYMENT} }} }}", id=deployment_id
            )["deployment"]
            if last and last["status"] in TERMINAL:
                return last
            time.sleep(0.5)
        raise AssertionError(f"deployment {deployment_id} not terminal in {seconds}s: {last}")


def node_settings(platform: Platform, name: str) -> dict[str, str]:
    """A node on this machine, building from the local base images, with its own proxy."""
    return {
        "SHIPWRECK_NODE_NAME": name,
        "SHIPWRECK_BASE_IMAGE_PYTHON": "shipwreck/base-python:bookworm",
        "SHIPWRECK_BASE_IMAGE_NODE": "shipwreck/base-node:bookworm",
        "SHIPWRECK_PULL_BASE_IMAGES": "false",
        "SHIPWRECK_BUILD_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        "SHIPWRECK_WORK_DIR": str(platform.state_dir / f"work-{name}"),
        "SHIPWRECK_PROXY_HTTP_PORT": str(free_port()),
        "SHIPWRECK_PROXY_ADMIN": f"127.0.0.1:{free_port()}",
        "SHIPWRECK_PROXY_DNS_PORT": str(free_port()),
    }


def start_api(platform: Platform, name: str = "api") -> Api:
    """Run an api process on a free port."""
    port = free_port()
    platform.start(
        name, "shipwreck_api", "api ready", SHIPWRECK_API_PORT=str(port), SHIPWRECK_API_TOKEN=TOKEN
    )
    return Api(port)


def wait_for_nodes(api: Api, count: int) -> None:
    """The scheduler places only on nodes it has heard from."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(api.gql("{ nodes { id } }")["nodes"]) < count:
        time.sleep(0.3)


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    with platform.concurrently():
        platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
        platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
        platform.start("node", "shipwreck_node", "node ready", **node_settings(platform, "e2e-1"))
        client = start_api(platform)
    wait_for_nodes(client, 1)
    yield client
    client.client.close()


def _get(url: str) -> tuple[int, str]:
    """GET an app's stable URL through its node's proxy (``<app>.localhost`` may not
    resolve here, so connect to loopback and send the host)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection("127.0.0.1", parts.port or 80, timeout=10)
    try:
        connection.request("GET", parts.path or "/", headers={"Host": parts.netloc})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("fixture_app", "expected"),
    [
        ("python-hello", "hello from shipwreck: 1,234,567 users\n"),
        ("node-hello", "node says: a minute is 1m, a day is 1 day\n"),
    ],
)
def test_a_git_url_deploys_and_serves_its_app(
    api: Api, git_server: GitServer, platform: Platform, fixture_app: str, expected: str
) -> None:
    commit = git_server.publish_app(fixture_app, fixture_app)
    deployment_id = api.deploy(git_server.url(fixture_app))
    d = api.wait_terminal(deployment_id)
    assert d["status"] == "RUNNING", (d, platform.log_tail("node"))
    assert d["commit"] == commit
    assert d["app"] == fixture_app
    statuses = [h["status"] for h in d["history"]]
    assert statuses[:3] == ["REQUESTED", "INITIALIZED", "SCHEDULED"]
    assert "BUILDING" in statuses
    assert "STARTING" in statuses
    assert statuses[-1] == "RUNNING"
    assert _get(d["url"]) == (200, expected)


def test_a_broken_repository_ends_errored_with_an_actionable_reason(
    api: Api, git_server: GitServer
) -> None:
    git_server.publish("empty", {"README.md": "no manifest here\n"})
    d = api.wait_terminal(api.deploy(git_server.url("empty")))
    assert d["status"] == "ERRORED"
    assert "no Shipwreck.toml" in d["error"]


READ_MODEL = (
    "{ deployments(first: 100) { " + DEPLOYMENT + " requestedAt repoUrl branch } "
    "apps { name repoUrl branch watching url current { id } } }"
)


def test_two_nodes_share_the_work_and_a_restarted_api_rebuilds_identical_answers(
    api: Api, git_server: GitServer, platform: Platform
) -> None:
    platform.start("node-2", "shipwreck_node", "node ready", **node_settings(platform, "e2e-2"))
    wait_for_nodes(api, 2)
    for repo in ("one", "two"):
        git_server.publish_app(repo, "python-hello")
    first = api.wait_terminal(api.deploy(git_server.url("one")))
    second = api.wait_terminal(api.deploy(git_server.url("two")))
    assert (first["status"], second["status"]) == ("RUNNING", "RUNNING"), (first, second)
    # The second went to the node the first did not load.
    assert first["node"] != second["node"]
    scores = api.gql(
        "query($id: ID!) { deployment(id: $id) { events { type data } } }", id=second["id"]
    )["deployment"]["events"]
    scheduled = [e for e in scores if e["type"] == "deployment.scheduled.v1"]
    assert len(scheduled) == 1
    assert '"scores"' in scheduled[0]["data"]

    before = api.gql(READ_MODEL)
    platform.stop("api")
    fresh = start_api(platform, "api-2")
    deadline = time.monotonic() + 30
    after = fresh.gql(READ_MODEL)
    while after != before and time.monotonic() < deadline:
        time.sleep(0.3)
        after = fresh.gql(READ_MODEL)
    assert after == before
    fresh.client.close()


UPDATES = """subscription($id: ID!, $after: Int) {
  deploymentUpdates(id: $id, after: $after) { status sequence } }"""
LOGS = """subscription($id: ID!, $after: Int) {
  deploymentLogs(id: $id, after: $after) { sequence stream text } }"""
STORED_LOGS = "query($id: ID!) { deployment(id: $id) { logs { sequence stream text } } }"


async def _subscribe(api: Api, query: str, **variables: Any) -> ClientConnection:
    """A subscription over a real websocket to the api process."""
    url = f"ws://127.0.0.1:{api.client.base_url.port}/graphql"
    return await subscribe(url, TOKEN, query, **variables)


async def _items(
    ws: ClientConnection, field: str, count: int | None = None, until: str | None = None
) -> list[Any]:
    """``count`` items, or items until one whose status is ``until``: a RUNNING
    deployment's subscriptions go on, so the operation must not complete before."""
    items: list[Any] = []
    while (count is None or len(items) < count) and not (
        until and items and items[-1]["status"] == until
    ):
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        except TimeoutError:
            raise AssertionError(f"nothing more within 120 s after {items}") from None
        if message["type"] == "complete":
            raise AssertionError(f"complete after {items}")
        assert message["type"] == "next", message
        items.append(message["payload"]["data"][field])
    return items


def test_live_clients_follow_a_real_deploy_and_a_late_one_gets_exactly_the_rest(
    api: Api, git_server: GitServer, platform: Platform
) -> None:
    git_server.publish_app("live-hello", "python-hello")
    deployment_id = api.deploy(git_server.url("live-hello"))

    async def follow() -> None:
        # Subscribed as the deploy starts: the deployment now, then every status change.
        updates = await _subscribe(api, UPDATES, id=deployment_id)
        logs = await _subscribe(api, LOGS, id=deployment_id)
        # A RUNNING deployment goes on (superseded or stopped some day): no `complete` yet.
        statuses = await _items(updates, "deploymentUpdates", until="RUNNING")
        stored = api.gql(STORED_LOGS, id=deployment_id)["deployment"]["logs"]
        lines = await _items(logs, "deploymentLogs", len(stored))
        d = api.wait_terminal(deployment_id)
        assert d["status"] == "RUNNING", (d, platform.log_tail("node"))
        # Every status from the one it subscribed at, in order, once; every line the api
        # keeps of the deployment, in order, once.
        history = [h["status"] for h in d["history"]]
        assert statuses[0]["status"] in {"REQUESTED", "INITIALIZED"}
        assert [s["status"] for s in statuses] == history[history.index(statuses[0]["status"]) :]
        assert [s["sequence"] for s in statuses] == sorted({s["sequence"] for s in statuses})
        assert lines == stored
        build = [line for line in lines if line["stream"] == "BUILD"]
        assert build, stored  # the image's build output reached the client live
        # Late, with what it had seen: exactly the rest, nothing twice, nothing skipped.
        seen = next(s["sequence"] for s in statuses if s["status"] == "SCHEDULED")
        late_updates = await _subscribe(api, UPDATES, id=deployment_id, after=seen)
        rest = [s for s in statuses if s["sequence"] > seen]
        assert await _items(late_updates, "deploymentUpdates", len(rest)) == rest
        middle = build[len(build) // 2]["sequence"]
        late_logs = await _subscribe(api, LOGS, id=deployment_id, after=middle)
        missed = [line for line in stored if line["sequence"] > middle]
        assert await _items(late_logs, "deploymentLogs", len(missed)) == missed
        for ws in (updates, logs, late_updates, late_logs):
            await ws.close()

    asyncio.run(follow())
