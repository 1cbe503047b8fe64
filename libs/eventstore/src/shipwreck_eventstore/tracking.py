"""Exact look-ups in the tracking table.

eventsourcing's ``has_tracking_id`` answers "is the maximum recorded position at least N",
which is right only when every upstream message is processed in order. RabbitMQ redelivers
a failed message after later ones, so Shipwreck records every position (multi-row tracking)
and asks for the exact row instead.
"""

from __future__ import annotations

from eventsourcing.persistence import ProcessRecorder, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier


def has_exact_tracking(recorder: ProcessRecorder, tracking: Tracking) -> bool:
    """Whether ``tracking`` (this exact upstream position) is recorded in ``recorder``."""
    if isinstance(recorder, SQLiteTrackingRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT 1 FROM tracking WHERE application_name = ? AND notification_id = ?",
                (tracking.application_name, tracking.notification_id),
            )
            return c.fetchone() is not None
    if isinstance(recorder, PostgresTrackingRecorder):
        statement = SQL(
            "SELECT 1 FROM {0}.{1} WHERE application_name = %s AND notification_id = %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.tracking_table_name))
        # One statement on an autocommit connection: one round trip, where a transaction
        # would add a BEGIN and a ROLLBACK (this runs before every tracked message).
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            params = (tracking.application_name, tracking.notification_id)
            curs.execute(statement, params, prepare=True)
            return curs.fetchone() is not None
    raise TypeError(f"no exact tracking look-up for {type(recorder).__qualname__}")
