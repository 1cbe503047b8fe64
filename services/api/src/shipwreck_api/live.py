"""Live updates: incoming messages fold into the read model, changes fan out to subscribers.

One :class:`Live` per api process. Its ``receive`` is called for every message of the api's
exclusive queue (live events, the replay, heartbeats, log lines); a change is computed
once and handed to every GraphQL subscriber through the broadcasters. It also tracks the
rebuild: until the orchestrator's ``ReplayFinished`` arrives, the read model is
"rebuilding" (queries answer, possibly incompletely).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from shipwreck_api.broadcast import Broadcaster, Overflow, Subscription
from shipwreck_api.errors import NotFound
from shipwreck_api.readmodel import Change, DeploymentRecord, ReadModel
from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStopped,
    DeploymentSuperseded,
    LogLine,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    ReplayFinished,
    decode_message,
    tag_of,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER

log = logging.getLogger(__name__)

T = TypeVar("T")

TRACKED_TAGS = tuple(
    tag_of(cls)
    for cls in (
        DeploymentRequested,
        DeploymentInitialized,
        DeploymentScheduled,
        DeploymentProgressed,
        DeploymentRunning,
        DeploymentErrored,
        DeploymentCancelled,
        DeploymentSuperseded,
        DeploymentStopped,
        AppWatchChanged,
    )
)
"""The orchestrator's events the read model folds (they carry origin/position headers)."""

LIVE_TAGS = (
    *TRACKED_TAGS,
    tag_of(NodeHeartbeat),
    tag_of(NodeDrained),
    tag_of(NodeLost),
    tag_of(LogLine),
)
"""Every tag the api's exclusive queue is bound to on the events exchange."""

LogItem = LogLine | DeploymentRecord
"""What a log subscriber receives: a line, or the deployment when its status changes."""


@dataclass
class ReplayState:
    """Where the rebuild of the read model stands (shown by /healthz)."""

    origin: str
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    last_position: int | None = None

    @property
    def rebuilding(self) -> bool:
        """Whether the replay of ``origin``'s log has not finished yet."""
        return self.finished_at is None

    def as_json(self) -> dict[str, Any]:
        """The state for /healthz."""
        return {
            "state": "rebuilding" if self.rebuilding else "ready",
            "origin": self.origin,
            "requestedAt": self.requested_at.isoformat() if self.requested_at else None,
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "lastPosition": self.last_position,
        }


class Live:
    """The read model of one api process, kept current and watched by subscribers."""

    def __init__(
        self,
        model: ReadModel | None = None,
        *,
        origin: str = "orchestrator",
        queue_size: int = 100,
        log_queue_size: int = 1000,
        unknown_wait: float = 10.0,
        log_grace: float = 2.0,
    ) -> None:
        self.model = model if model is not None else ReadModel()
        self.replay = ReplayState(origin)
        # A status subscriber only needs the latest state: drop its oldest if it lags.
        self.updates: Broadcaster[uuid.UUID, DeploymentRecord] = Broadcaster(
            maxsize=queue_size, overflow=Overflow.DROP_OLDEST
        )
        # A log subscriber must not silently miss lines: disconnect it if it lags.
        self.logs: Broadcaster[uuid.UUID, LogItem] = Broadcaster(
            maxsize=log_queue_size, overflow=Overflow.DISCONNECT
        )
        self.unknown_wait = unknown_wait
        self.log_grace = log_grace

    # -- incoming --------------------------------------------------------------------------------

    def receive_raw(self, body: bytes, headers: Mapping[str, Any]) -> None:
        """Decode and apply one delivery of the api's queue; a bad one is logged, not raised.

        Never raising matters: the queue is exclusive and has no delivery limit, so a
        message that failed would be redelivered forever.
        """
        try:
            message = decode_message(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            log.warning("ignoring an undecodable message on the update queue: %s", e)
            return
        try:
            self.receive(message, headers)
        except Exception:
            log.exception("could not apply %s to the read model", tag_of(message))

    def receive(self, message: msgspec.Struct, headers: Mapping[str, Any]) -> None:
        """Apply one message to the read model and announce what changed."""
        match message:
            case (
                DeploymentRequested()
                | DeploymentInitialized()
                | DeploymentScheduled()
                | DeploymentProgressed()
                | DeploymentRunning()
                | DeploymentErrored()
                | DeploymentCancelled()
                | DeploymentSuperseded()
                | DeploymentStopped()
                | AppWatchChanged()
            ):
                origin, position = headers.get(ORIGIN_HEADER), headers.get(POSITION_HEADER)
                if origin is None or position is None:
                    # Without its log position the event cannot be ordered or deduplicated.
                    log.warning("ignoring %s without origin/position headers", tag_of(message))
                    return
                self._announce(
                    self.model.apply(message, origin=str(origin), position=int(position))
                )
            case NodeHeartbeat() | NodeDrained() | NodeLost():
                self.model.apply_node(message)
            case LogLine():
                if self.model.apply_log(message):
                    self.logs.publish(message.deployment_id, message)
            case ReplayFinished(origin=origin) if origin == self.replay.origin:
                self.replay.finished_at = message.at
                self.replay.last_position = message.last_position
                log.info(
                    "read model rebuilt from %s up to position %d", origin, message.last_position
                )
            case _:
                # A replay brings every message the writer published, work for nodes too.
                log.debug("update queue: %s is not for the api", type(message).__name__)

    def expect(self, record: DeploymentRecord) -> None:
        """Show a deployment just requested through this process until its events arrive."""
        self.model.expect(record)
        self.updates.publish(record.id, record)

    def _announce(self, change: Change) -> None:
        for deployment_id, before in change.deployments.items():
            record = self.model.deployment(deployment_id)
            if record is None or record.status == before:
                continue
            self.updates.publish(deployment_id, record)
            self.logs.publish(deployment_id, record)

    # -- subscriptions ---------------------------------------------------------------------------

    async def deployment_updates(self, deployment_id: uuid.UUID) -> AsyncIterator[DeploymentRecord]:
        """The deployment now, then once per status change; ends after a terminal status."""
        with self.updates.subscribe(deployment_id) as subscription:
            # Subscribing and reading the current state happen without a suspension point
            # in between, so no change can fall between the two.
            record = self.model.deployment(deployment_id)
            if record is None:
                record = await self._first(subscription, deployment_id)
            yield record
            last = record.status
            while not last.is_terminal:
                record = await subscription.get()
                if record.status != last:
                    last = record.status
                    yield record

    async def deployment_logs(self, deployment_id: uuid.UUID) -> AsyncIterator[LogLine]:
        """The lines kept so far, then live ones; ends shortly after a terminal status."""
        with self.logs.subscribe(deployment_id) as subscription:
            record = self.model.deployment(deployment_id)
            backlog = self.model.logs.lines(deployment_id)
            if record is None and not backlog:
                first = await self._first(subscription, deployment_id)
                if isinstance(first, LogLine):
                    backlog = [first]
                else:
                    record = first
            for line in backlog:
                yield line
            if record is not None and record.status.is_terminal:
                return
            deadline: float | None = None  # set once terminal: late lines may still come
            loop = asyncio.get_running_loop()
            while True:
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    return
                try:
                    item = await asyncio.wait_for(subscription.get(), timeout)
                except TimeoutError:
                    return
                if isinstance(item, LogLine):
                    yield item
                elif item.status.is_terminal and deadline is None:
                    # Lines travel node -> api directly, the status via the orchestrator:
                    # the last lines may arrive just after it.
                    deadline = loop.time() + self.log_grace

    async def _first(
        self,
        subscription: Subscription[uuid.UUID, T],
        deployment_id: uuid.UUID,
    ) -> T:
        # A deployment requested through another api process, or not replayed yet, appears
        # later: wait for it a while, and as long as the read model is rebuilding.
        while True:
            try:
                return await asyncio.wait_for(subscription.get(), self.unknown_wait)
            except TimeoutError:
                if not self.replay.rebuilding:
                    raise NotFound(f"no deployment with id {deployment_id}") from None
