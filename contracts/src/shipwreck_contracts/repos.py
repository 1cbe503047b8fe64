"""Repository changes: the watcher's output and the webhooks it is fed through the api."""

from __future__ import annotations

from typing import Annotated

import msgspec

from .base import Message
from .enums import Trigger
from .values import AwareDatetime, BranchName, CommitSha, RepoUrl

DeliveryId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class RepoChanged(Message, tag="repo.changed.v1", frozen=True, kw_only=True):
    """A watched branch moved to a new commit.

    ``trigger`` is WATCH (found by polling) or WEBHOOK (announced by the Git host, then
    ``delivery_id`` is the host's delivery id). ``previous`` is the commit seen before, if any.
    """

    repo_url: RepoUrl
    branch: BranchName
    commit: CommitSha
    previous: CommitSha | None = None
    trigger: Trigger
    delivery_id: DeliveryId | None = None
    detected_at: AwareDatetime


class WebhookReceived(Message, tag="repo.webhook-received.v1", frozen=True, kw_only=True):
    """The api received a push webhook; the watcher records it and decides what it means.

    The api checks the signature (it holds the secret) and passes the outcome as
    ``verified``; the watcher keeps every delivery in its ledger, accepted or rejected.
    ``ref`` is the full ref pushed, e.g. ``refs/heads/main``.
    """

    delivery_id: DeliveryId
    provider: str
    repo_url: RepoUrl
    ref: str
    commit: CommitSha | None = None
    verified: bool
    received_at: AwareDatetime
