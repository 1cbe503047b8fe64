"""The outbox relay: follows a writer's notification log and publishes integration messages.

Invariant 4 (outbox, not dual writes): the code that saves never publishes. The relay reads
the application's notification log from its last recorded position, translates each domain
event into at most one integration message, publishes it with publisher confirms, and only
then records the new position. A relay that dies between publishing and recording publishes
the same messages again on restart; consumers drop the duplicates by their Tracking, which
is why every message carries its origin and position in its headers.

Latency: a save in this process hands its committed notifications, with their domain
events, straight to the relay (no read, and no decoding, of what was just written), and
while the relay runs, recording the position does not hold up the next batch, and
happens at most once a second. The store stays the source: the relay reads it at start,
after a gap in the handed-over ids, and on every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio
from eventsourcing.persistence import Notification, Recording, Tracking
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import ReplayFinished
from shipwreck_contracts.base import Message, tag_of
from shipwreck_eventstore.application import ShipwreckApplication
from shipwreck_messaging.publishing import ORIGIN_HEADER, POSITION_HEADER, publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    """A message sent under an explicit routing key: work for one node (``work.<id>``), or
    a copy of an integration event for the one consumer that wants only some of them."""

    message: Message
    routing_key: str


Outgoing = Message | Routed
Translate = Callable[[Any], Outgoing | Sequence[Outgoing] | None]
"""Maps one domain event to what it announces: nothing (private), one message, or several.

Several messages from one event share its position, so each must go to a different
consumer: a consumer's Tracking would take the second for a duplicate of the first."""


def outgoing(translated: Outgoing | Sequence[Outgoing] | None) -> list[Routed]:
    """Normalise a translation to routed messages (routing key = tag unless given)."""
    if translated is None:
        return []
    items = [translated] if isinstance(translated, Message | Routed) else list(translated)
    return [i if isinstance(i, Routed) else Routed(i, tag_of(i)) for i in items]


def relay_position_name(app_name: str) -> str:
    """Tracking name under which the relay of ``app_name`` records its position."""
    return f"{app_name}.outbox"


def tracking_from_headers(headers: Mapping[str, Any]) -> Tracking | None:
    """The upstream position a relayed message carries, or None for an untracked message."""
    origin = headers.get(ORIGIN_HEADER)
    position = headers.get(POSITION_HEADER)
    if origin is None or position is None:
        return None
    return Tracking(application_name=str(origin), notification_id=int(position))


class OutboxRelay:
    """Publishes an application's integration messages in log order, at least once."""

    def __init__(
        self,
        app: ShipwreckApplication,
        broker: RabbitBroker,
        translate: Translate,
        *,
        batch_size: int = 200,
        idle_poll_seconds: float = 1.0,
        record_every_seconds: float = 1.0,
    ) -> None:
        self.app = app
        self.broker = broker
        self.translate = translate
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        # While publishing, the position is recorded at most this often (and when the relay
        # stops): each record is a database commit, which a batch of one message (a webhook,
        # a stage report) paid in full. A crash republishes at most this much; consumers
        # drop the duplicates by their Tracking.
        self.record_every_seconds = record_every_seconds
        self._stopping = asyncio.Event()
        self.position_name = relay_position_name(app.name)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._position: int | None = None
        self._recorded = 0
        self._recording: asyncio.Task[None] | None = None
        # Events committed by saves in this process and not yet published, by notification
        # id, with the domain event the save had (no decoding of what was just encoded).
        # Bounded: past the limit the store is read instead (a broker outage, say).
        self._fresh: dict[int, Recording[UUID]] = {}
        self._fresh_limit = 10 * batch_size
        # Done when the batch being published now is confirmed (or has failed).
        self._in_flight: asyncio.Future[None] | None = None

    async def position(self) -> int:
        """The last notification id whose message is known to be published (0 if none).

        Read from the store once, then kept in memory: each application has one relay, so
        nothing else moves it (a query per wake-up costs a round trip on every message).
        """
        if self._position is None:
            recorder = self.app.process_recorder
            value = await anyio.to_thread.run_sync(recorder.max_tracking_id, self.position_name)
            self._position = self._recorded = value or 0
        return self._position

    async def publish_batch(self) -> int | None:
        """Publish the next batch after the published position; return its last id, or None.

        Does not record the position: :meth:`record_position` does, after this returns.
        """
        recordings, _ = await self._next_batch()
        if not recordings:
            return None
        await self._publish(recordings)
        return recordings[-1].notification.id

    async def _next_batch(self) -> tuple[list[Recording[UUID]], bool]:
        """The events after the published position, and whether more may follow."""
        start = await self.position() + 1
        for stale in [i for i in self._fresh if i < start]:
            del self._fresh[stale]
        handed: list[Recording[UUID]] = []
        while len(handed) < self.batch_size and (r := self._fresh.pop(start + len(handed), None)):
            handed.append(r)
        if handed:
            return handed, bool(self._fresh)
        # Nothing handed over from ``start`` on: a fresh start, a poll, a save in another
        # process, or a gap in the ids (a rolled-back insert uses ids up): the store says.
        notifications = await self._select(start)
        to_event = self.app.mapper.to_domain_event
        read = [Recording(domain_event=to_event(n), notification=n) for n in notifications]
        return read, len(notifications) == self.batch_size

    async def _publish(self, recordings: Sequence[Recording[UUID]]) -> None:
        publishes = []
        for recording in recordings:
            notification = recording.notification
            for routed in outgoing(self.translate(recording.domain_event)):
                publishes.append(
                    publish(
                        self.broker,
                        routed.message,
                        routing_key=routed.routing_key,
                        headers={ORIGIN_HEADER: self.app.name, POSITION_HEADER: notification.id},
                        message_id=f"{self.app.name}:{notification.id}",
                    )
                )
        # Sent in log order on one channel, confirmed together: waiting for each confirm in
        # turn would cap the relay at one broker round trip per message. If any publish
        # fails, the position is not recorded and the whole batch goes again.
        await asyncio.gather(*publishes)

    async def replay(self, reply_to: str, after_position: int = 0) -> int:
        """Republish every integration message after ``after_position`` to queue ``reply_to``.

        For rebuilding a reader's read model: straight to its queue (default exchange), with
        the same origin and position headers as live messages, then ``ReplayFinished``.
        Returns the last position replayed. Reading is bounded by what the relay has already
        published, so a replay never announces an event before its live publication.
        """
        last = max(after_position, 0)
        if self._in_flight is not None:
            # A batch is on its way, maybe routed before the reader's queue existed: wait
            # for its confirm, so the replay includes it. (If it fails, it is published
            # again later, and then the reader's queue gets it live.)
            await asyncio.shield(self._in_flight)
        published_up_to = await self.position()
        while last < published_up_to:
            notifications = await self._select(last + 1, stop=published_up_to)
            if not notifications:
                break
            sends = []
            for notification in notifications:
                for routed in outgoing(
                    self.translate(self.app.mapper.to_domain_event(notification))
                ):
                    if routed.routing_key != tag_of(routed.message):
                        continue  # node work and copies are not part of any read model
                    sends.append(
                        self.broker.publish(
                            routed.message,
                            queue=reply_to,
                            persist=True,
                            headers={
                                ORIGIN_HEADER: self.app.name,
                                POSITION_HEADER: notification.id,
                            },
                            message_id=f"{self.app.name}:{notification.id}",
                            message_type=tag_of(routed.message),
                        )
                    )
            await asyncio.gather(*sends)
            last = notifications[-1].id
        await self.broker.publish(
            ReplayFinished(origin=self.app.name, last_position=last, at=datetime.now(UTC)),
            queue=reply_to,
            persist=True,
            message_type=tag_of(ReplayFinished),
        )
        return last

    async def _select(self, start: int, stop: int | None = None) -> list[Notification]:
        recorder = self.app.process_recorder
        return list(
            await anyio.to_thread.run_sync(
                lambda: recorder.select_notifications(start, self.batch_size, stop=stop)
            )
        )

    async def record_position(self, position: int) -> None:
        """Record that everything up to ``position`` is published."""
        tracking = Tracking(application_name=self.position_name, notification_id=position)
        await anyio.to_thread.run_sync(self.app.process_recorder.insert_tracking, tracking)
        self._recorded = position
        self._position = max(self._position or 0, position)

    async def run_once(self) -> int:
        """Publish and record one batch; return how many notifications it covered."""
        before = await self.position()
        last = await self.publish_batch()
        if last is None:
            return 0
        await self.record_position(last)
        return last - before

    async def run(self) -> None:
        """Relay forever: drain the log, then wait for a save (or a poll interval)."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self.app.on_saved(self._offer_from_any_thread)
        log.info("outbox relay for %s started at position %d", self.app.name, await self.position())
        try:
            while True:
                # Cleared before looking, so a save during this round wakes the next one.
                self._wake.clear()
                try:
                    recordings, more = await self._next_batch()
                    if recordings:
                        self._in_flight = asyncio.get_running_loop().create_future()
                        try:
                            await self._publish(recordings)
                            self._published(recordings[-1].notification.id)
                        finally:
                            self._in_flight.set_result(None)
                            self._in_flight = None
                except Exception:
                    # Broker or database down: keep the position, try again shortly.
                    log.exception("outbox relay for %s failed; retrying", self.app.name)
                    await asyncio.sleep(self.idle_poll_seconds)
                    continue
                if more:
                    continue
                # (asyncio.timeout, not wait_for: no task to create and schedule per wait)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_poll_seconds):
                        await self._wake.wait()
        finally:
            await self._finish_recording()

    def _published(self, position: int) -> None:
        # The batch is confirmed: it counts as published now (replays may include it), and
        # its position is recorded in the background, so the next batch need not wait for
        # a database commit. Losing that record only means publishing again after a restart.
        self._position = position
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._record_published())

    async def _record_published(self) -> None:
        # One writer at a time, always the newest position: the ones in between need no row.
        # It waits first, so that the batches published meanwhile share one record.
        try:
            while self._recorded < (self._position or 0):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.record_every_seconds):
                        await self._stopping.wait()
                await self.record_position(self._position or 0)
        except Exception:
            log.exception("outbox relay for %s could not record its position", self.app.name)

    async def _finish_recording(self) -> None:
        self._stopping.set()  # record now, without waiting out the interval
        if self._recording is not None:
            await self._recording
        if self._recorded < (self._position or 0):
            await self._record_published()

    def _offer_from_any_thread(self, recordings: Sequence[Recording[UUID]]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._offer, list(recordings))

    def _offer(self, recordings: list[Recording[UUID]]) -> None:
        for recording in recordings:
            if len(self._fresh) < self._fresh_limit:
                self._fresh[recording.notification.id] = recording
        self._wake.set()
