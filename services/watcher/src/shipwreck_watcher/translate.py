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
        held: list[str] = getattr(e, "held", None) or []  # not recorded by earlier versions
        if not e.baseline and not set(e.apps) <= set(held):
            out.append(
                RepoChanged(
                    repo_url=e.repo_url,
                    branch=e.branch,
                    commit=e.commit,
                    previous=e.previous,
                    trigger=e.trigger,
                    delivery_id=e.delivery_id,
                    detected_at=e.at,
                    held=held,
                )
            )
        if e.trigger is Trigger.WATCH:
            reason = (
                "provisional baseline (the head at the first check; the commit the first "
                "deployment builds settles it)"
                if e.baseline
                else f"new commit after {e.previous}"
            )
            if held:
                reason += f"; not deployed to {', '.join(held)} (rolled back away from it)"
            out.append(
                LedgerEntryRecorded(
                    repo_url=e.repo_url,
                    branch=e.branch,
                    apps=e.apps,
                    kind="COMMIT_OBSERVED",
                    commit=e.commit,
                    reason=reason,
                    at=e.at,
                    trigger=e.trigger,
                )
            )
        return out
    if kind == "WatchedRepo.BaselineSettled":
        if e.previous is None or e.previous == e.commit:
            settled = f"baseline: the commit {e.app}'s first deployment built"
        else:
            settled = (
                f"baseline: the commit {e.app}'s first deployment built (the first check had "
                f"seen {e.previous[:12]}, which the next check deploys)"
            )
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=e.apps,
                kind="COMMIT_OBSERVED",
                commit=e.commit,
                reason=settled,
                at=e.at,
                trigger=Trigger.WATCH,
            )
        ]
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
        ran = getattr(e, "away_from", None)  # not recorded by earlier versions
        ran = ran if ran not in (e.head, e.commit) else None
        if e.head is not None and e.head != e.commit:
            # A commit it ran is held too, but only worth naming when the head is not
            # (then it is one the watcher never saw: deployed by hand before any check).
            kept = f"the head {e.head[:12]} is not deployed again"
        elif ran is not None:  # deployed by hand before any check saw it
            kept = f"{ran[:12]}, which it ran, is not deployed again"
        else:
            kept = "pinned"
        return [
            LedgerEntryRecorded(
                repo_url=e.repo_url,
                branch=e.branch,
                apps=[e.app],
                kind="ROLLBACK_PINNED",
                commit=e.commit,
                reason=f"{e.app} rolled back to {e.commit[:12]}: {kept} until the branch moves",
                at=e.at,
                trigger=Trigger.ROLLBACK,
            )
        ]
    return []
