"""Rebuilding read models: a reader asks a writer to replay its log to the reader's queue.

A read model (the api's, a dashboard's) can be dropped and rebuilt from the event store
(invariant 2) without reading another service's tables: the reader sends
``ReplayRequested`` and the writer's relay republishes, straight to ``reply_to``, every
integration message after ``after_position``, each with its origin and position headers,
then ``ReplayFinished``. Live messages keep flowing meanwhile; positions make the merge exact.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from .base import Message
from .values import AwareDatetime

Position = Annotated[int, msgspec.Meta(ge=0, description="A notification id (0: the start).")]

ORCHESTRATOR_ORIGIN: Final = "orchestrator"
"""The orchestrator's event store: its log rebuilds the read model of deployments and apps."""

WATCHER_ORIGIN: Final = "watcher"
"""The watcher's event store: its log holds the trigger ledger."""


class ReplayRequested(Message, tag="projection.replay-request.v1", frozen=True, kw_only=True):
    """Replay ``origin``'s integration messages after ``after_position`` to ``reply_to``."""

    origin: str
    reply_to: str
    after_position: Position = 0
    requested_at: AwareDatetime


class ReplayFinished(Message, tag="projection.replay-finished.v1", frozen=True, kw_only=True):
    """Everything of ``origin`` up to ``last_position`` has been replayed to this queue."""

    origin: str
    last_position: Position
    at: AwareDatetime
