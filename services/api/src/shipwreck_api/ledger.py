"""The trigger ledger as the api shows it: the watcher's ledger entries, per (repository,
branch), and per app.

The watcher records why each deployment was or was not triggered (a commit seen by a
poll, a webhook accepted or rejected and why, a rollback pinning an app); its relay
announces each entry as ``LedgerEntryRecorded``. This is a projection of those messages,
like the rest of the read model: entries are keyed by their place in the watcher's log
``(origin, position)``, so a replay mixed with live delivery, in any order and with
duplicates, gives the same ledger.

Memory is bounded: each (repository, branch) keeps its newest ``max_entries`` entries (by
log position). An older entry arriving late, once the pair is full, is as good as rotated
out, so the kept set is the same whatever the arrival order.

Nothing here does I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias

from shipwreck_contracts import LedgerEntryRecorded

DEFAULT_MAX_ENTRIES: Final = 1000
REJECTED: Final = "WEBHOOK_REJECTED"

Pair: TypeAlias = tuple[str, str | None]
"""A (repository URL, branch) pair, as the entry names them (a branch may be unknown)."""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ledger entry with its place in the watcher's log."""

    origin: str
    position: int
    entry: LedgerEntryRecorded

    @property
    def order(self) -> tuple[int, str]:
        """Log order: the watcher records its entries in position order."""
        return self.position, self.origin

    @property
    def accepted(self) -> bool:
        """False when the watcher rejected what it was told (``entry.reason`` says why)."""
        return self.entry.kind != REJECTED


@dataclass
class _PairRows:
    rows: list[LedgerRow] = field(default_factory=list)
    """Kept rows in log order."""
    keys: set[tuple[str, int]] = field(default_factory=set)
    floor: tuple[int, str] | None = None
    """The order of the newest row rotated out: anything at or before it stays out."""


class Ledger:
    """The ledger entries received so far, bounded per (repository, branch)."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("the ledger keeps at least one entry per (repository, branch)")
        self.max_entries = max_entries
        self._pairs: dict[Pair, _PairRows] = {}
        # Apps named by an entry outside their own pair (a push to another branch of their
        # repository, a rollback pin): where to look for them besides their own pair.
        self._pairs_of_app: dict[str, set[Pair]] = {}
        self.count = 0

    def emptied(self) -> Ledger:
        """An empty ledger with the same bound (to rebuild from a replay)."""
        return Ledger(max_entries=self.max_entries)

    def apply(self, entry: LedgerEntryRecorded, *, origin: str, position: int) -> bool:
        """Keep ``entry``, relayed at ``position`` of ``origin``'s log; False if it was
        already kept or is older than what its pair keeps."""
        pair: Pair = (entry.repo_url, entry.branch)
        kept = self._pairs.setdefault(pair, _PairRows())
        row = LedgerRow(origin, position, entry)
        if (origin, position) in kept.keys:
            return False
        if kept.floor is not None and row.order <= kept.floor:
            return False
        bisect.insort(kept.rows, row, key=lambda r: r.order)
        kept.keys.add((origin, position))
        self.count += 1
        for app in entry.apps:
            self._pairs_of_app.setdefault(app, set()).add(pair)
        if len(kept.rows) > self.max_entries:
            oldest = kept.rows.pop(0)
            kept.keys.discard((oldest.origin, oldest.position))
            kept.floor = oldest.order
            self.count -= 1
        return True

    def for_app(
        self,
        name: str,
        repo_url: str | None,
        branch: str | None,
        *,
        limit: int,
        until: datetime | None = None,
    ) -> list[LedgerRow]:
        """The newest ``limit`` entries about app ``name``, oldest first.

        An app's entries are those of its own (repository, branch) and those that name it.
        With ``until``, only the entries recorded by then (the ledger as it was).
        """
        if limit <= 0:
            return []
        own: Pair | None = (repo_url, branch) if repo_url is not None else None
        pairs = set(self._pairs_of_app.get(name, ()))
        if own is not None:
            pairs.add(own)
        rows = [
            row
            for pair in pairs
            for row in self._pairs.get(pair, _PairRows()).rows
            if (pair == own or name in row.entry.apps) and (until is None or row.entry.at <= until)
        ]
        rows.sort(key=lambda r: r.order)
        return rows[-limit:]

    def tracked(self) -> Iterator[tuple[LedgerEntryRecorded, str, int]]:
        """Every entry kept, with its origin and position."""
        for kept in self._pairs.values():
            for row in kept.rows:
                yield row.entry, row.origin, row.position
