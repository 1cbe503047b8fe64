"""The base of every Shipwreck event-sourced application."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import Notification, ProcessRecorder, Recording, Tracking

from shipwreck_eventstore.config import StoreConfig
from shipwreck_eventstore.tracking import has_exact_tracking

SavedListener = Callable[[Sequence[Recording[UUID]]], None]
"""Told of each save's recordings (domain events with their notification ids)."""


# Any constant of the platform's own: pg_advisory_lock keys are one namespace per database.
_TABLES_LOCK = 0x5348_4950_5752  # "SHIPWR"


@contextlib.contextmanager
def _creating_tables(settings: dict[str, str]) -> Iterator[None]:
    """While an application creates its tables, no other in the same PostgreSQL database
    does. Services started at once on a fresh database (``just up``) would otherwise race
    on what their applications share, the composite types and insert functions that
    eventsourcing creates or replaces, and one of them would fail on pg_proc's or
    pg_type's uniqueness. A session lock on a connection of its own: the creation runs
    several transactions of its own."""
    if settings.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        yield
        return
    with psycopg.connect(
        dbname=settings["POSTGRES_DBNAME"],
        host=settings["POSTGRES_HOST"],
        port=settings["POSTGRES_PORT"],
        user=settings["POSTGRES_USER"],
        password=settings["POSTGRES_PASSWORD"],
        connect_timeout=int(settings.get("POSTGRES_CONNECT_TIMEOUT", "5")),
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_TABLES_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_TABLES_LOCK,))


class ShipwreckApplication(Application[UUID]):
    """An eventsourcing ``Application`` configured from a :class:`StoreConfig`.

    Its recorder is a process recorder, so new events can be committed together with the
    upstream ``Tracking`` that caused them (see :func:`shipwreck_eventstore.process_once`).
    Subclasses must pin ``name``: it names the tables (PostgreSQL) or the file (SQLite).
    """

    name = "ShipwreckApplication"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "name" not in cls.__dict__:
            raise TypeError(
                f"{cls.__qualname__} must set `name`: it names the application's tables, "
                "and a class rename must never move the data"
            )
        super().__init_subclass__(**kwargs)

    def __init__(self, store: StoreConfig, env: dict[str, str] | None = None) -> None:
        self.store_config = store
        self._saved_listeners: list[SavedListener] = []
        self._listeners_lock = threading.Lock()
        settings = {**store.env_for(self.name), **(env or {})}
        with _creating_tables(settings):
            super().__init__(settings)

    def construct_recorder(self) -> ProcessRecorder:
        """A recorder that can also insert Tracking rows in the same transaction."""
        return self.factory.process_recorder()

    @property
    def process_recorder(self) -> ProcessRecorder:
        """The recorder, typed as the process recorder it is."""
        recorder = self.recorder
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    def record(self, *objs: Any, tracking: Tracking | None = None) -> list[Recording[UUID]]:
        """Save the pending events of ``objs`` atomically with ``tracking`` (if given)."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
        processing_event.collect_events(*objs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def forget(self, *aggregate_ids: UUID) -> None:
        """Drop these aggregates from the cache (if any), so the next read is from the store."""
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in aggregate_ids:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def all_notifications(self, page: int = 1000) -> Iterator[Notification]:
        """Every notification in the log, in order, read ``page`` at a time (for start-up
        recovery and tools that fold the whole log)."""
        start = 1
        while batch := self.process_recorder.select_notifications(start, page):
            yield from batch
            start = batch[-1].id + 1

    def has_tracking(self, tracking: Tracking) -> bool:
        """Whether exactly this upstream position has been recorded already."""
        return has_exact_tracking(self.process_recorder, tracking)

    def on_saved(self, listener: SavedListener) -> None:
        """Call ``listener`` with the recordings of every save, after its commit.

        It runs in the saving thread, so it must be cheap and thread-safe (the relay only
        hands the notifications to its event loop).
        """
        with self._listeners_lock:
            self._saved_listeners.append(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if not recordings:
            return
        with self._listeners_lock:
            listeners = list(self._saved_listeners)
        for listener in listeners:
            listener(recordings)
