"""Deploy a Git URL end to end: every service as its own process, on real RabbitMQ,
PostgreSQL, Docker and a git daemon on loopback, driven through the public GraphQL API."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.gitdaemon import GitServer, free_port
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
