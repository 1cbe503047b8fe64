"""Repository changes: the watcher's output and the webhooks it is fed through the api."""

from __future__ import annotations

from typing import Annotated

import msgspec

from .base import Message
from .enums import Trigger
from .values import AppName, AwareDatetime, BranchName, CommitSha, RepoUrl

DeliveryId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class RepoChanged(Message, tag="repo.changed.v1", frozen=True, kw_only=True):
    """A watched branch moved to a new commit.

    ``trigger`` is WATCH (found by polling) or WEBHOOK (announced by the Git host, then
    ``delivery_id`` is the host's delivery id). ``previous`` is the commit seen before, if any.
    ``held`` are the apps watching the branch that must not get this commit: they were
    rolled back away from it.
    """

    repo_url: RepoUrl
    branch: BranchName
    commit: CommitSha
    previous: CommitSha | None = None
    trigger: Trigger
    delivery_id: DeliveryId | None = None
    detected_at: AwareDatetime
    held: list[AppName] = []


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
    repo_urls: list[str] = []
    """Every URL the payload gives for the repository (https, ssh, git): a watched app may
    have been deployed from any of them."""
    rejection: str | None = None
    """Why the api already knows this delivery cannot count (e.g. a bad signature)."""


class LedgerEntryRecorded(Message, tag="repo.ledger-entry.v1", frozen=True, kw_only=True):
    """One line of the trigger ledger: what the watcher saw or was told, and what it did.

    ``kind`` is COMMIT_OBSERVED (by polling, or the baseline: the commit the first
    deployment built), WEBHOOK_ACCEPTED,
    WEBHOOK_REJECTED (``reason`` says why: bad signature, branch not watched, duplicate
    delivery, commit pinned by a rollback, ...) or ROLLBACK_PINNED (an app was rolled back:
    the branch head is not deployed again; the next commit pushed is). ``apps`` are the
    apps the entry concerns (those watching the (repository, branch), or the one rolled
    back).
    """

    repo_url: RepoUrl
    branch: BranchName | None = None
    apps: list[str] = []
    kind: str
    commit: CommitSha | None = None
    delivery_id: DeliveryId | None = None
    reason: str = ""
    at: AwareDatetime
    provider: str | None = None
    """The Git host that sent the webhook (github, gitea, gitlab); None for other kinds."""
    trigger: Trigger | None = None
    """How the watcher learnt of it: WATCH (a poll), WEBHOOK, or ROLLBACK (a pin)."""
