"""Push webhooks on the real api and RabbitMQ: signatures checked, every delivery reported."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from shipwreck_contracts import WebhookReceived, tag_of
from tests.integration.test_api_graphql import Orchestra, amqp_url, api, orchestra

pytestmark = [pytest.mark.anyio, pytest.mark.infra]
__all__ = ["amqp_url", "orchestra"]

SECRET = "webhook-secret"
COMMIT = "ab" * 20


def _github(
    delivery: str, *, secret: str = SECRET, ref: str = "refs/heads/main", event: str = "push"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "ref": ref,
            "after": COMMIT,
            "repository": {
                "clone_url": "https://git.example.org/acme/shop.git",
                "ssh_url": "git@git.example.org:acme/shop.git",
            },
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }


async def _post(client: Any, provider: str, body: bytes, headers: dict[str, str]) -> Any:
    return await client.post(f"/webhooks/{provider}", content=body, headers=headers)


async def test_a_signed_github_push_is_accepted_and_reported(
    amqp_url: str, orchestra: Orchestra, tmp_path: Path
) -> None:
    spy = await orchestra.spy([tag_of(WebhookReceived)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path, webhook_secret=SECRET)) as client:
        body, headers = _github("delivery-1")
        response = await _post(client, "github", body, headers)
    assert response.status_code == 202, response.text
    message, _ = await spy.next()
    assert isinstance(message, WebhookReceived)
    assert (
        message.delivery_id,
        message.repo_url,
        message.ref,
        message.commit,
        message.verified,
    ) == ("delivery-1", "https://git.example.org/acme/shop.git", "refs/heads/main", COMMIT, True)
    assert message.repo_urls == ["git@git.example.org:acme/shop.git"]


async def test_a_bad_signature_is_401_and_still_reported_for_the_ledger(
    amqp_url: str, orchestra: Orchestra, tmp_path: Path
) -> None:
    spy = await orchestra.spy([tag_of(WebhookReceived)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path, webhook_secret=SECRET)) as client:
        body, headers = _github("delivery-2", secret="not-the-secret")
        response = await _post(client, "github", body, headers)
    assert response.status_code == 401
    assert "X-Hub-Signature-256 does not match" in response.json()["error"]
    message, _ = await spy.next()
    assert isinstance(message, WebhookReceived)
    assert message.verified is False
    assert message.rejection
    assert "does not match" in message.rejection


async def test_gitea_and_gitlab_pushes_are_understood(
    amqp_url: str, orchestra: Orchestra, tmp_path: Path
) -> None:
    spy = await orchestra.spy([tag_of(WebhookReceived)])
    gitea_body = json.dumps(
        {
            "ref": "refs/heads/main",
            "after": COMMIT,
            "repository": {"clone_url": "https://gitea.example.org/acme/shop.git"},
        }
    ).encode()
    gitlab_body = json.dumps(
        {
            "ref": "refs/heads/main",
            "checkout_sha": COMMIT,
            "project": {"git_http_url": "https://gitlab.example.org/acme/shop.git"},
        }
    ).encode()
    async with AsyncTestClient(app=api(amqp_url, tmp_path, webhook_secret=SECRET)) as client:
        gitea = await _post(
            client,
            "gitea",
            gitea_body,
            {
                "X-Gitea-Event": "push",
                "X-Gitea-Delivery": "g-1",
                "X-Gitea-Signature": hmac.new(
                    SECRET.encode(), gitea_body, hashlib.sha256
                ).hexdigest(),
            },
        )
        gitlab = await _post(
            client,
            "gitlab",
            gitlab_body,
            {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "l-1", "X-Gitlab-Token": SECRET},
        )
    assert (gitea.status_code, gitlab.status_code) == (202, 202)
    got = [await spy.next(), await spy.next()]
    assert sorted((m.provider, m.repo_url) for m, _ in got if isinstance(m, WebhookReceived)) == [
        ("gitea", "https://gitea.example.org/acme/shop.git"),
        ("gitlab", "https://gitlab.example.org/acme/shop.git"),
    ]


@pytest.mark.parametrize(
    ("provider", "headers", "status", "fragment"),
    [
        ("bitbucket", {}, 404, "unknown webhook provider 'bitbucket'"),
        ("github", {"X-GitHub-Event": "push"}, 400, "missing X-GitHub-Delivery"),
        ("github", {"X-GitHub-Delivery": "x"}, 400, "missing X-GitHub-Event"),
    ],
)
async def test_malformed_webhooks_are_refused_with_the_reason_and_report_nothing(
    amqp_url: str,
    orchestra: Orchestra,
    tmp_path: Path,
    provider: str,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    spy = await orchestra.spy([tag_of(WebhookReceived)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path, webhook_secret=SECRET)) as client:
        response = await _post(client, provider, b"{}", headers)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert await spy.messages(settle=0.3) == []


async def test_a_ping_is_answered_and_not_reported(
    amqp_url: str, orchestra: Orchestra, tmp_path: Path
) -> None:
    spy = await orchestra.spy([tag_of(WebhookReceived)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path, webhook_secret=SECRET)) as client:
        body, headers = _github("ping-1", event="ping")
        response = await _post(client, "github", body, headers)
    assert response.status_code == 200
    assert await spy.messages(settle=0.3) == []


async def test_without_a_secret_webhooks_are_disabled(amqp_url: str, tmp_path: Path) -> None:
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        body, headers = _github("d")
        response = await _post(client, "github", body, headers)
    assert response.status_code == 503
    assert "SHIPWRECK_WEBHOOK_SECRET" in response.json()["error"]
