"""What the watcher announces: new commits (``repo.changed``) and every ledger entry."""

from __future__ import annotations

from typing import Any

from shipwreck_contracts import LedgerEntryRecorded, RepoChanged, Trigger
from shipwreck_eventstore.relay import Outgoing


def translate(e: Any) -> list[Outgoing]:
    """``repo.changed`` for each new commit after the baseline, and the ledger entries."""
    kind = type(e).__qualname__
    if kind == "WatchedRepo.CommitObserved":
        out: list[Outgoing] = []
        if not e.baseline:
            out.append(
                RepoChanged(
                    repo_url=e.repo_url,
                    branch=e.branch,
                    commit=e.commit,
                    previous=e.previous,
                    trigger=e.trigger,
                    delivery_id=e.delivery_id,
                    detected_at=e.at,
                )
            )
        if e.trigger is Trigger.WATCH:
            out.append(
                LedgerEntryRecorded(
                    repo_url=e.repo_url,
                    branch=e.branch,
                    apps=e.apps,
                    kind="COMMIT_OBSERVED",
                    commit=e.commit,
                    reason="baseline (the head when watching began)"
                    if e.baseline
                    else f"new commit after {e.previous}",
                    at=e.at,
                    trigger=e.trigger,
                )
            )
        return out
    if kind == "Delivery.Rejected":
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=e.apps,
                kind="WEBHOOK_REJECTED",
                commit=e.commit,
                delivery_id=e.delivery_id,
                reason=e.reason,
                at=e.at,
                provider=e.provider,
                trigger=Trigger.WEBHOOK,
            )
        ]
    if kind == "Delivery.DuplicateReceived":
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=e.apps,
                kind="WEBHOOK_REJECTED",
                commit=e.commit,
                delivery_id=e.delivery_id,
                reason="duplicate delivery",
                at=e.at,
                provider=e.provider,
                trigger=Trigger.WEBHOOK,
            )
        ]
    if kind == "Delivery.Accepted":
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=e.apps,
                kind="WEBHOOK_ACCEPTED",
                commit=e.commit,
                delivery_id=e.delivery_id,
                reason="new commit" if e.new else "commit already seen (no new deployment)",
                at=e.at,
                provider=e.provider,
                trigger=Trigger.WEBHOOK,
            )
        ]
    if kind == "WatchedRepo.RollbackPinned":
        held = (
            f"the head {e.head[:12]} is not deployed again"
            if e.head is not None and e.head != e.commit
            else "pinned"
        )
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=[e.app],
                kind="ROLLBACK_PINNED",
                commit=e.commit,
                reason=f"{e.app} rolled back to {e.commit[:12]}: {held} until the branch moves",
                at=e.at,
                trigger=Trigger.ROLLBACK,
            )
        ]
    return []
