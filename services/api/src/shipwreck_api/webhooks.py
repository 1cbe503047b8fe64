"""Push webhooks from GitHub, Gitea and GitLab: verify, then describe the push.

Pure functions over (headers, raw body, secret). The api publishes the outcome as
``WebhookReceived``; the watcher's ledger decides what it means (and records rejections).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

PROVIDERS = ("github", "gitea", "gitlab")
ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Push:
    """What a push webhook says, and whether its signature holds."""

    provider: str
    delivery_id: str
    repo_url: str
    ref: str
    commit: str | None
    verified: bool
    rejection: str | None = None
    repo_urls: list[str] = field(default_factory=list)


class WebhookError(ValueError):
    """The request is not a usable push webhook; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Ignored(Exception):
    """A valid delivery that is not a push (ping, issues, ...): answered 200, not recorded."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name) or headers.get(name.lower())
    return value.strip() if value else None


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _verify(provider: str, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
    """None when the signature holds, else why not."""
    if provider == "github":
        given = _header(headers, "X-Hub-Signature-256")
        if not given:
            return "missing X-Hub-Signature-256 header"
        expected = "sha256=" + _hmac_hex(secret, body)
        return (
            None
            if hmac.compare_digest(given, expected)
            else ("bad signature: X-Hub-Signature-256 does not match the webhook secret")
        )
    if provider == "gitea":
        given = _header(headers, "X-Gitea-Signature")
        if not given:
            return "missing X-Gitea-Signature header"
        return (
            None
            if hmac.compare_digest(given, _hmac_hex(secret, body))
            else ("bad signature: X-Gitea-Signature does not match the webhook secret")
        )
    given = _header(headers, "X-Gitlab-Token")
    if not given:
        return "missing X-Gitlab-Token header"
    return (
        None
        if hmac.compare_digest(given, secret)
        else ("bad token: X-Gitlab-Token does not match the webhook secret")
    )


def _event_and_delivery(provider: str, headers: Mapping[str, str]) -> tuple[str, str]:
    names = {
        "github": ("X-GitHub-Event", "X-GitHub-Delivery"),
        "gitea": ("X-Gitea-Event", "X-Gitea-Delivery"),
        "gitlab": ("X-Gitlab-Event", "X-Gitlab-Event-UUID"),
    }[provider]
    event = _header(headers, names[0])
    delivery = _header(headers, names[1])
    if not event:
        raise WebhookError(400, f"missing {names[0]} header")
    if not delivery:
        raise WebhookError(400, f"missing {names[1]} header (the delivery id)")
    if len(delivery) > 255:
        raise WebhookError(400, f"{names[1]} is longer than 255 characters")
    return event, delivery


def _urls(provider: str, payload: dict[str, Any]) -> list[str]:
    if provider == "gitlab":
        holder = payload.get("project") or {}
        keys: tuple[str, ...] = ("git_http_url", "git_ssh_url", "web_url")
    else:
        holder = payload.get("repository") or {}
        keys = ("clone_url", "ssh_url", "git_url", "html_url")
    return [str(holder[k]) for k in keys if isinstance(holder.get(k), str)]


def parse_push(provider: str, headers: Mapping[str, str], body: bytes, secret: str) -> Push:
    """Read a push webhook. Raises :class:`WebhookError` (bad request) or :class:`Ignored`.

    A bad signature is not an exception: it comes back ``verified=False`` with the reason,
    so the ledger can record the attempt (the api answers it with 401).
    """
    if provider not in PROVIDERS:
        raise WebhookError(
            404, f"unknown webhook provider {provider!r}; allowed: {', '.join(PROVIDERS)}"
        )
    event, delivery = _event_and_delivery(provider, headers)
    problem = _verify(provider, headers, body, secret)
    if problem is None and event.lower() in ("ping", "system hook"):
        raise Ignored(event)
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise WebhookError(400, f"the body is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "the body is not a JSON object")
    if problem is None and event.lower() not in ("push", "push hook"):
        raise Ignored(event)
    urls = _urls(provider, payload)
    if not urls:
        raise WebhookError(400, "the payload names no repository URL")
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise WebhookError(400, "the payload has no ref")
    commit = payload.get("checkout_sha") if provider == "gitlab" else None
    commit = commit or payload.get("after")
    if not isinstance(commit, str) or commit == ZERO_SHA or len(commit) not in (40, 64):
        commit = None  # a deleted branch, or no usable commit: the ledger says so
    return Push(
        provider=provider,
        delivery_id=delivery,
        repo_url=urls[0],
        ref=ref,
        commit=commit.lower() if commit else None,
        verified=problem is None,
        rejection=problem,
        repo_urls=urls[1:],
    )
