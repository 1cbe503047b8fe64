"""Time travel on the real api and RabbitMQ: the platform as it was, and what changed.

The test relays the story of tests/unit/test_api_story.py (two apps, a redeploy of hello
that takes over from its first deployment, a failure, a cancellation) and asks GraphQL
about moments before, during and after the redeploy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from shipwreck_contracts import DeploymentRequested, DeploymentSuperseded
from tests.integration.test_api_graphql import (
    Orchestra,
    amqp_url,
    api,
    eventually,
    gql,
    orchestra,
)
from tests.unit.test_api_story import Story, story

__all__ = ["amqp_url", "orchestra"]  # fixtures shared with test_api_graphql

pytestmark = [pytest.mark.anyio, pytest.mark.infra]

STATE = """query($at: DateTime!) { state(at: $at) {
  at
  apps { name url current { id status commit } latest { id status } }
  deployments(first: 10) { id app status sequence }
  hello: app(name: "hello") { deployments { id status } }
} }"""
DIFF = """query($from: DateTime!, $to: DateTime!) { diff(from: $from, to: $to) {
  from to addedApps removedApps
  apps { name before { id commit } after { id commit } }
  deployments { id app before after deployment { status sequence } }
} }"""


def _requested_at(s: Story, deployment_id: object) -> datetime:
    for item in s.relayed:
        if isinstance(item.message, DeploymentRequested) and (
            item.message.deployment_id == deployment_id
        ):
            return item.message.at
    raise AssertionError(deployment_id)


async def _relayed(client: AsyncTestClient[Litestar], orchestra: Orchestra, s: Story) -> None:
    await orchestra.relay(s.relayed)
    await eventually(
        client,
        "{ deployments { status } }",
        lambda d: (
            [x["status"] for x in d["deployments"]]
            == ["CANCELLED", "RUNNING", "ERRORED", "RUNNING", "SUPERSEDED"]
        ),
    )


async def test_state_before_a_redeploy_shows_the_previous_deployment_as_current(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=20_000)
    before_redeploy = _requested_at(s, s.second) - timedelta(milliseconds=1)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await _relayed(client, orchestra, s)
        then = await gql(client, STATE, at=before_redeploy.isoformat())
        now = await gql(client, STATE, at=s.relayed[-1].message.at.isoformat())
    assert "errors" not in then, then
    state: dict[str, Any] = then["data"]["state"]
    assert state["at"] == before_redeploy.isoformat()
    assert state["apps"] == [
        {
            "name": "hello",
            "url": "http://hello.apps.example.com",
            "current": {"id": str(s.first), "status": "RUNNING", "commit": "0" * 39 + "1"},
            "latest": {"id": str(s.first), "status": "RUNNING"},
        }
    ]
    assert [(d["id"], d["status"]) for d in state["deployments"]] == [(str(s.first), "RUNNING")]
    assert state["hello"]["deployments"] == [{"id": str(s.first), "status": "RUNNING"}]
    current = {a["name"]: a["current"]["id"] for a in now["data"]["state"]["apps"]}
    assert current == {"hello": str(s.second), "other": str(s.other)}


async def test_diff_across_a_redeploy_names_it(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=21_000)
    start = _requested_at(s, s.second) - timedelta(milliseconds=1)
    swap = next(r for r in s.relayed if isinstance(r.message, DeploymentSuperseded))
    end = swap.message.at
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await _relayed(client, orchestra, s)
        answer = await gql(client, DIFF, **{"from": start.isoformat(), "to": end.isoformat()})
        unchanged = await gql(client, DIFF, **{"from": end.isoformat(), "to": end.isoformat()})
    assert "errors" not in answer, answer
    diff = answer["data"]["diff"]
    assert (diff["from"], diff["to"]) == (start.isoformat(), end.isoformat())
    assert diff["apps"] == [
        {
            "name": "hello",
            "before": {"id": str(s.first), "commit": "0" * 39 + "1"},
            "after": {"id": str(s.second), "commit": "0" * 39 + "2"},
        }
    ]
    assert [(d["id"], d["before"], d["after"]) for d in diff["deployments"]] == [
        (str(s.first), "RUNNING", "SUPERSEDED"),
        (str(s.second), None, "RUNNING"),
    ]
    assert diff["deployments"][1]["deployment"] == {"status": "RUNNING", "sequence": 7}
    assert (diff["addedApps"], diff["removedApps"]) == ([], [])
    assert unchanged["data"]["diff"]["deployments"] == []
    assert unchanged["data"]["diff"]["apps"] == []


async def test_a_time_without_an_offset_is_utc_and_the_events_are_the_stored_timeline(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=22_000)
    before_redeploy = _requested_at(s, s.second) - timedelta(milliseconds=1)
    naive = before_redeploy.replace(tzinfo=None).isoformat()
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await _relayed(client, orchestra, s)
        then = await gql(client, "query($at: DateTime!) { state(at: $at) { at } }", at=naive)
        events = await gql(
            client,
            """query($id: ID!) {
                 deployment(id: $id) { sequence events { sequence type position } } }""",
            id=str(s.first),
        )
    assert then["data"]["state"]["at"] == before_redeploy.isoformat()
    deployment = events["data"]["deployment"]
    assert [e["sequence"] for e in deployment["events"]] == list(range(1, 9))
    assert deployment["sequence"] == 8
    assert deployment["events"][0]["type"] == "deployment.requested.v1"
    assert deployment["events"][-1]["type"] == "deployment.superseded.v1"
    positions = [e["position"] for e in deployment["events"]]
    assert positions == sorted(positions)
