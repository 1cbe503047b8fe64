"""Exactly-once effects: a consumer's new events commit together with the upstream position."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking

from shipwreck_eventstore.application import ShipwreckApplication

log = logging.getLogger(__name__)

# True while process_once decides again after a failed insert: reads of ids taken to be new
# must then ask the store (see existing()).
_DECIDING_AGAIN: ContextVar[bool] = ContextVar("shipwreck_deciding_again", default=False)


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
    for attempt in range(attempts):
        if tracking is not None and app.has_tracking(tracking):
            return False
        token = _DECIDING_AGAIN.set(attempt > 0)
        try:
            aggregates = decide()
        finally:
            _DECIDING_AGAIN.reset(token)
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


def existing(app: ShipwreckApplication, aggregate_id: UUID) -> Any | None:
    """The recorded aggregate ``aggregate_id``, or None, for a ``decide`` that creates it
    when there is none.

    Such ids are derived from what they stand for (a webhook delivery, an app's commit), so
    nearly every one is new, and asking the store to say so cost every webhook a round trip
    in the watcher and another in the orchestrator. So the first decision of
    :func:`process_once` takes an id the writer's cache does not hold for a new one. If it
    was recorded after all (evicted from the cache, or written before a restart), creating
    it again breaks the store's uniqueness of (id, version 1): the whole transaction fails,
    and process_once decides again, this time with the store's answer. Call it only from
    a ``decide`` run by process_once, and only for an aggregate it creates when missing.
    """
    cache = app.repository.cache
    if not _DECIDING_AGAIN.get() and (cache is None or not _holds(cache, aggregate_id)):
        return None
    try:
        return app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None


def _holds(cache: Any, aggregate_id: UUID) -> bool:
    try:
        cache.get(aggregate_id)
    except KeyError:
        return False
    return True
