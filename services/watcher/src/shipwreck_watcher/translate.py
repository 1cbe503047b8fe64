"""What the watcher announces: new commits (``repo.changed``) and every ledger entry."""

from __future__ import annotations

from typing import Any

from shipwreck_contracts import LedgerEntryRecorded, RepoChanged, Trigger
from shipwreck_eventstore.relay import Outgoing


def _entry(e: Any, kind: str, reason: str, trigger: Trigger, **extra: Any) -> LedgerEntryRecorded:
    """The ledger entry of event ``e``: its branch, apps, commit and time, and why."""
    fields: dict[str, Any] = extra if "apps" in extra else {"apps": e.apps, **extra}
    return LedgerEntryRecorded(
        repo_url=e.repo_url,
        branch=e.branch,
        commit=e.commit,
        kind=kind,
        reason=reason,
        at=e.at,
        trigger=trigger,
        **fields,
    )


def _webhook_entry(e: Any, kind: str, reason: str) -> LedgerEntryRecorded:
    return _entry(e, kind, reason, Trigger.WEBHOOK, delivery_id=e.delivery_id, provider=e.provider)


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
            out.append(_entry(e, "COMMIT_OBSERVED", reason, e.trigger))
        return out
    if kind == "WatchedRepo.BaselineSettled":
        settled = f"baseline: the commit {e.app}'s first deployment built"
        if e.previous is not None and e.previous != e.commit:
            settled += (
                f" (the first check had seen {e.previous[:12]}, which the next check deploys)"
            )
        return [_entry(e, "COMMIT_OBSERVED", settled, Trigger.WATCH)]
    if kind == "Delivery.Rejected":
        return [_webhook_entry(e, "WEBHOOK_REJECTED", e.reason)]
    if kind == "Delivery.DuplicateReceived":
        return [_webhook_entry(e, "WEBHOOK_REJECTED", "duplicate delivery")]
    if kind == "Delivery.Accepted":
        reason = "new commit" if e.new else "commit already seen (no new deployment)"
        return [_webhook_entry(e, "WEBHOOK_ACCEPTED", reason)]
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
        reason = f"{e.app} rolled back to {e.commit[:12]}: {kept} until the branch moves"
        return [_entry(e, "ROLLBACK_PINNED", reason, Trigger.ROLLBACK, apps=[e.app])]
    return []
