"""Exactly-once effects: a consumer's new events commit together with the upstream position."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking

from shipwreck_eventstore.application import ShipwreckApplication

log = logging.getLogger(__name__)


class ConcurrencyConflict(RuntimeError):
    """Another writer kept changing the same aggregates; the message should be retried."""


def process_once(
    app: ShipwreckApplication,
    tracking: Tracking | None,
    decide: Callable[[], Sequence[Any]],
    *,
    attempts: int = 5,
) -> bool:
    """Run ``decide`` and record the aggregates it returns, with ``tracking``, exactly once.

    ``decide`` reads current state from ``app`` and returns the aggregates it changed (their
    pending events are recorded). It may run more than once: after an optimistic-concurrency
    conflict it runs again on fresh state. Returns False when ``tracking`` was already
    recorded (a redelivered message), True when this call recorded it. Without ``tracking``
    (a message with no upstream position) only the conflict retries apply.
    """
    for _ in range(attempts):
        if tracking is not None and app.has_tracking(tracking):
            return False
        aggregates = decide()
        try:
            app.record(*aggregates, tracking=tracking)
        except IntegrityError:
            # The same error means two different things: look before deciding which.
            if tracking is not None and app.has_tracking(tracking):
                log.debug("duplicate delivery of %s recorded concurrently", tracking)
                return False
            log.debug("version conflict while processing %s; deciding again", tracking)
            # A cached copy may be what lost (a save racing its own cache update), so the
            # next decision reads these aggregates from the store.
            app.forget(*(a.id for a in aggregates))
            continue
        return True
    raise ConcurrencyConflict(
        f"gave up after {attempts} optimistic-concurrency conflicts processing {tracking}"
    )
