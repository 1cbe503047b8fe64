"""The api on a real RabbitMQ: bearer authentication and the live node view."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from shipwreck_api.app import create_app
from shipwreck_api.settings import ApiSettings
from shipwreck_contracts import NodeHeartbeat
from shipwreck_messaging import create_broker, publish
from tests.support.infra import AMQP_URL

pytestmark = [pytest.mark.anyio, pytest.mark.infra]

QUERY = {"query": "{ nodes { id hostname cpuCount memFreeMb } }"}


def _settings(tmp_path: Path) -> ApiSettings:
    return ApiSettings(amqp_url=AMQP_URL, api_token="right-token", state_dir=str(tmp_path))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "right-token"},
        {"Authorization": "Basic right-token"},
    ],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_graphql_without_a_valid_token_is_401(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async with AsyncTestClient(app=create_app(_settings(tmp_path))) as client:
        response = await client.post("/graphql", json=QUERY, headers=headers)
    assert response.status_code == 401
    assert "bearer token" in response.json()["detail"]
    assert "right-token" not in response.text


async def test_nodes_query_shows_a_node_after_its_heartbeat(tmp_path: Path) -> None:
    node_id = uuid.uuid4()
    publisher = create_broker(AMQP_URL, app_id="test")
    auth = {"Authorization": "Bearer right-token"}
    async with AsyncTestClient(app=create_app(_settings(tmp_path))) as client, publisher:
        await publisher.connect()
        await publish(
            publisher,
            NodeHeartbeat(
                node_id=node_id,
                hostname="api-test-node",
                cpu_count=3,
                mem_total_mb=2048,
                mem_free_mb=1024,
                load_avg=0.25,
                at=datetime.now(UTC),
            ),
        )
        nodes: list[dict[str, object]] = []
        for _ in range(50):
            response = await client.post("/graphql", json=QUERY, headers=auth)
            assert response.status_code == 200
            nodes = [n for n in response.json()["data"]["nodes"] if n["id"] == str(node_id)]
            if nodes:
                break
            await asyncio.sleep(0.1)
    assert nodes == [
        {"id": str(node_id), "hostname": "api-test-node", "cpuCount": 3, "memFreeMb": 1024}
    ]


def test_generated_token_file_is_private(tmp_path: Path) -> None:
    from shipwreck_api.auth import resolve_token

    token, source = resolve_token(None, str(tmp_path))
    assert source == str(tmp_path / "api-token")
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
    assert resolve_token(None, str(tmp_path)) == (token, source)
