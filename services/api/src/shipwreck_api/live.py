"""Live updates: incoming messages fold into the read model, changes fan out to subscribers.

One :class:`Live` per api process. Its ``receive`` is called for every message of the api's
exclusive queue (live events, the replays, heartbeats, log lines); a change is computed
once and handed to every GraphQL subscriber through the broadcasters. It also tracks the
rebuild: until the orchestrator's ``ReplayFinished`` arrives, the read model is
"rebuilding" (queries wait for it a while, see :meth:`Live.ready`), and
:meth:`Live.rebuild` drops the read model and waits for a new replay. The trigger ledger
comes from another log, the watcher's, replayed and tracked the same way beside it.

Subscribers can resume: deployments carry a ``sequence`` (how many of their events are
folded) and log lines an ``(attempt, sequence)``; a subscriber that says what it has seen
gets what came after, computed from the stored events and the log buffer. The same
mechanism fills the gap when a subscriber fell so far behind that its bounded queue dropped
items: nobody blocks anybody, memory stays bounded, and nothing is skipped silently.

A subscriber given a :class:`Sink` (its websocket, :mod:`shipwreck_api.direct`) hands its
subscription over to it whenever it has caught up: updates are then written by the
publish itself, with the same rules as the generator's loop (the ``_Direct*`` classes
below), and the generator takes over again for what the sink cannot take and at the end.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import msgspec

from shipwreck_api.broadcast import Broadcaster, Delivery, Overflow, Subscription
from shipwreck_api.errors import NotFound, Rebuilding
from shipwreck_api.ledger import Ledger
from shipwreck_api.readmodel import (
    AppRecord,
    Change,
    Counts,
    DeploymentRecord,
    LogKey,
    ReadModel,
    log_key,
    status_at,
    status_changes,
)
from shipwreck_contracts import (
    ORCHESTRATOR_ORIGIN,
    WATCHER_ORIGIN,
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentStopped,
    DeploymentSuperseded,
    LedgerEntryRecorded,
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
T_contra = TypeVar("T_contra", contravariant=True)

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
        DeploymentCancelRefused,
        AppWatchChanged,
    )
)
"""The orchestrator's events the read model folds (they carry origin/position headers)."""

LIVE_TAGS = (
    *TRACKED_TAGS,
    tag_of(LedgerEntryRecorded),
    tag_of(NodeHeartbeat),
    tag_of(NodeDrained),
    tag_of(NodeLost),
    tag_of(LogLine),
)
"""Every tag the api's exclusive queue is bound to on the events exchange."""

LogItem = LogLine | DeploymentRecord
"""What a log subscriber receives: a line, or the deployment when its status changes."""


class Sink(Protocol[T_contra]):
    """Where a subscriber's items can be sent without its generator (its websocket)."""

    def send(self, item: T_contra, shared: dict[Any, Any]) -> bool:
        """Send ``item`` now; False if it cannot, and the generator must send it."""
        ...


class _DirectStatusChanges:
    """:meth:`Live.deployment_updates`'s loop, for items published while handed over."""

    __slots__ = ("last_status", "seen", "sink")

    def __init__(
        self, sink: Sink[DeploymentRecord], seen: int, last_status: DeploymentStatus
    ) -> None:
        self.sink = sink
        self.seen = seen
        self.last_status = last_status

    def deliver(self, item: DeploymentRecord, shared: dict[Any, Any]) -> Delivery:
        if item.sequence <= self.seen:
            return Delivery.SKIPPED  # already seen, or the model is being rebuilt below it
        if item.status == self.last_status:
            self.seen = item.sequence
            return Delivery.SKIPPED
        if not self.sink.send(item, shared):
            return Delivery.LEFT
        self.seen, self.last_status = item.sequence, item.status
        return Delivery.ENDED if item.status.is_terminal else Delivery.SENT


class _DirectLogLines:
    """:meth:`Live.deployment_logs`'s loop, for items published while handed over."""

    __slots__ = ("cursor", "sink")

    def __init__(self, sink: Sink[LogLine], cursor: LogKey | None) -> None:
        self.sink = sink
        self.cursor = cursor

    def deliver(self, item: LogItem, shared: dict[Any, Any]) -> Delivery:
        if isinstance(item, LogLine):
            key = log_key(item)
            if self.cursor is not None and key <= self.cursor:
                return Delivery.SKIPPED
            if not self.sink.send(item, shared):
                return Delivery.LEFT
            self.cursor = key
            return Delivery.SENT
        # A terminal status starts the generator's grace period for late lines.
        return Delivery.LEFT if item.status.is_terminal else Delivery.SKIPPED


class _DirectEvery:
    """:meth:`Live.app_updates`'s loop (every item), for items published while handed over."""

    __slots__ = ("sink",)

    def __init__(self, sink: Sink[AppRecord]) -> None:
        self.sink = sink

    def deliver(self, item: AppRecord, shared: dict[Any, Any]) -> Delivery:
        return Delivery.SENT if self.sink.send(item, shared) else Delivery.LEFT


@dataclass
class ReplayState:
    """Where the rebuild of the read model stands (shown by /healthz)."""

    origin: str
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    last_position: int | None = None
    answer: int | None = None
    """Which ReplayFinished (1st, 2nd, ... of this process) answers this rebuild's request."""
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

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


@dataclass(frozen=True)
class RebuildOutcome:
    """What a rebuild did: counts before and after, and whether the replay finished."""

    requested_at: datetime
    finished_at: datetime | None
    last_position: int | None
    before: Counts
    after: Counts
    seconds: float
    ledger_finished_at: datetime | None = None
    """When the watcher finished replaying the ledger (None: not within the wait)."""

    @property
    def complete(self) -> bool:
        """Whether the orchestrator's ReplayFinished arrived within the timeout."""
        return self.finished_at is not None

    @property
    def ledger_complete(self) -> bool:
        """Whether the watcher's ReplayFinished arrived within the timeout."""
        return self.ledger_finished_at is not None


class Live:
    """The read model of one api process, kept current and watched by subscribers."""

    def __init__(
        self,
        model: ReadModel | None = None,
        *,
        origin: str = ORCHESTRATOR_ORIGIN,
        ledger_origin: str = WATCHER_ORIGIN,
        queue_size: int = 100,
        log_queue_size: int = 1000,
        unknown_wait: float = 10.0,
        read_wait: float = 10.0,
        log_grace: float = 2.0,
        settle: float = 0.05,
    ) -> None:
        self.model = model if model is not None else ReadModel()
        self.replay = ReplayState(origin)
        self.ledger_replay = ReplayState(ledger_origin)
        # Every subscriber has a bounded queue and never blocks the publisher; one that
        # falls behind loses its oldest items and refills what it missed from the read
        # model (stored events, the log buffer) when it catches up.
        self.updates: Broadcaster[uuid.UUID, DeploymentRecord] = Broadcaster(
            maxsize=queue_size, overflow=Overflow.DROP_OLDEST
        )
        self.logs: Broadcaster[uuid.UUID, LogItem] = Broadcaster(
            maxsize=log_queue_size, overflow=Overflow.DROP_OLDEST
        )
        self.apps: Broadcaster[str, AppRecord] = Broadcaster(
            maxsize=queue_size, overflow=Overflow.DROP_OLDEST
        )
        self.unknown_wait = unknown_wait
        self.read_wait = read_wait
        self.log_grace = log_grace
        self.settle = settle
        # Per origin: replay requests published, and ReplayFinished received.
        self._replays_requested: Counter[str] = Counter()
        self._replays_finished: Counter[str] = Counter()
        self._previous: ReadModel | None = None
        self._previous_ledger: Ledger | None = None
        self._rebuilding_apps = False
        self._rebuild_lock = asyncio.Lock()
        self._last_tracked = 0.0

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
                | DeploymentCancelRefused()
                | AppWatchChanged()
            ):
                origin, position = headers.get(ORIGIN_HEADER), headers.get(POSITION_HEADER)
                if origin is None or position is None:
                    # Without its log position the event cannot be ordered or deduplicated.
                    log.warning("ignoring %s without origin/position headers", tag_of(message))
                    return
                self._last_tracked = _loop_time()
                self._announce(
                    self.model.apply(message, origin=str(origin), position=int(position))
                )
            case LedgerEntryRecorded():
                origin, position = headers.get(ORIGIN_HEADER), headers.get(POSITION_HEADER)
                if origin is None or position is None:
                    log.warning("ignoring a ledger entry without origin/position headers")
                    return
                self._last_tracked = _loop_time()
                self.model.apply_ledger(message, origin=str(origin), position=int(position))
            case NodeHeartbeat() | NodeDrained() | NodeLost():
                self.model.apply_node(message)
            case LogLine():
                if self.model.apply_log(message):
                    self.logs.publish(message.deployment_id, message)
            case ReplayFinished(origin=origin) if origin in (
                self.replay.origin,
                self.ledger_replay.origin,
            ):
                self._replay_finished(message)
            case _:
                # A replay brings every message the writer published, work for nodes too.
                log.debug("update queue: %s is not for the api", type(message).__name__)

    def expect(self, record: DeploymentRecord) -> None:
        """Show a deployment just requested through this process until its events arrive."""
        self.model.expect(record)
        self.updates.publish(record.id, record)

    def _announce(self, change: Change) -> None:
        apps = set(change.watched)
        for deployment_id, before in change.deployments.items():
            record = self.model.deployment(deployment_id)
            if record is None or record.status == before:
                continue
            self.updates.publish(deployment_id, record)
            self.logs.publish(deployment_id, record)
            if record.app is not None:
                apps.add(record.app)
        if self._rebuilding_apps:
            return  # a dropped model refolding: its partial apps would mislead subscribers
        self._publish_apps(apps)

    def _publish_apps(self, names: Iterable[str]) -> None:
        for name in names:
            # An app is folded only for its subscribers, once for all of them.
            if self.apps.subscriber_count(name):
                app = self.model.app(name)
                if app is not None:
                    self.apps.publish(name, app)

    # -- the replay, and rebuilding ----------------------------------------------------------------

    async def ready(self, wait: float | None = None) -> ReadModel:
        """The read model once it has folded the orchestrator's replay, waiting for that up
        to ``wait`` seconds (default ``read_wait``); :class:`Rebuilding` after that.

        Before the replay has finished, the model lacks what happened before this process
        started (or before a rebuild dropped it): an app it does not know yet may well
        exist, and a list would be short. Saying so beats answering wrongly.
        """
        if not self.replay.rebuilding:
            return self.model  # every question but those right after a start or a rebuild
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.read_wait if wait is None else wait)
        # A rebuild replaces the state: wait for whichever one is current.
        while (state := self.replay).rebuilding:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Rebuilding(_rebuilding_message(state))
            try:
                await asyncio.wait_for(state.done.wait(), remaining)
            except TimeoutError:
                raise Rebuilding(_rebuilding_message(state)) from None
        return self.model

    def _state(self, origin: str | None) -> ReplayState:
        if origin is None or origin == self.replay.origin:
            return self.replay
        if origin == self.ledger_replay.origin:
            return self.ledger_replay
        raise ValueError(f"no replay of {origin!r} rebuilds this read model")

    def replay_requesting(self, at: datetime, origin: str | None = None) -> None:
        """Say that a replay request to ``origin`` (default: the orchestrator's) is about to
        be published for the current rebuild.

        Called before publishing: the answer may be handled before the publish returns.
        """
        state = self._state(origin)
        if state.answer is None:
            state.answer = self._replays_requested[state.origin] + 1
        if state.requested_at is None:
            state.requested_at = at

    def replay_requested(self, origin: str | None = None) -> None:
        """Say that the replay request announced by :meth:`replay_requesting` was published."""
        self._replays_requested[self._state(origin).origin] += 1

    def _replay_finished(self, message: ReplayFinished) -> None:
        # Each writer answers requests in order, one ReplayFinished each: the n-th one
        # answers the n-th request, and an answer to an earlier request (before a rebuild
        # dropped the model) does not end the current rebuild.
        state = self._state(message.origin)
        self._replays_finished[state.origin] += 1
        # Without a request from this process (tests feeding messages), the first answers.
        answer = state.answer if state.answer is not None else 1
        if self._replays_finished[state.origin] < answer or state.done.is_set():
            return
        state.finished_at = message.at
        state.last_position = message.last_position
        # What was received live before the drop and after what the replay covered (the
        # relay had published it but not yet recorded its position) is not replayed: keep
        # it from the dropped model.
        if state is self.replay:
            previous, self._previous = self._previous, None
            if previous is not None:
                for tracked, origin, position in previous.tracked():
                    if origin == state.origin and position > message.last_position:
                        change = self.model.apply(tracked, origin=origin, position=position)
                        self._announce(change)
        else:
            ledger, self._previous_ledger = self._previous_ledger, None
            if ledger is not None:
                for entry, origin, position in ledger.tracked():
                    if origin == state.origin and position > message.last_position:
                        self.model.apply_ledger(entry, origin=origin, position=position)
        state.done.set()
        log.info(
            "read model rebuilt from %s up to position %d", message.origin, message.last_position
        )

    async def rebuild(
        self,
        request_replay: Callable[[], Awaitable[None]],
        *,
        wait: float,
    ) -> RebuildOutcome:
        """Drop the read model, ask for replays, and answer once they have finished.

        ``request_replay`` publishes the requests, to the orchestrator and to the watcher
        (calling :meth:`replay_requesting` and :meth:`replay_requested` for each). Answers
        when the orchestrator's ReplayFinished has arrived and the deliveries before it are
        folded, and the watcher's too if it has ever answered this process (an api run
        without a watcher does not wait for one); or after ``wait`` seconds (the rebuild
        then goes on; /healthz says when it is done). One rebuild at a time.
        """
        async with self._rebuild_lock:
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = started + wait
            requested_at = datetime.now(UTC)
            old = self.model
            before = old.counts()
            old_state, old_ledger_state = self.replay, self.ledger_replay
            state = ReplayState(
                old_state.origin, answer=self._replays_requested[old_state.origin] + 1
            )
            ledger_origin = old_ledger_state.origin
            ledger_state = ReplayState(
                ledger_origin, answer=self._replays_requested[ledger_origin] + 1
            )
            wait_for_ledger = self._replays_finished[ledger_origin] > 0
            self._previous, self._previous_ledger = old, old.ledger
            self.model, self.replay, self.ledger_replay = old.emptied(), state, ledger_state
            self._rebuilding_apps = True
            log.info("read model dropped: rebuilding from a replay of %s", state.origin)
            try:
                await request_replay()
            except BaseException:
                # Nothing will answer: keep the old model, with what arrived meanwhile.
                dropped, self.model = self.model, old
                self._previous = self._previous_ledger = None
                self._rebuilding_apps = False
                for tracked, origin, position in dropped.tracked():
                    self._announce(old.apply(tracked, origin=origin, position=position))
                for entry, origin, position in dropped.ledger.tracked():
                    old.apply_ledger(entry, origin=origin, position=position)
                self.replay, self.ledger_replay = old_state, old_ledger_state
                raise
            try:
                await asyncio.wait_for(state.done.wait(), wait)
                if wait_for_ledger:
                    await asyncio.wait_for(ledger_state.done.wait(), deadline - loop.time())
            except TimeoutError:
                log.warning("read model rebuild: a replay did not finish within %.0fs", wait)
            else:
                await self._settled(loop.time() + min(wait, 1.0))
            finally:
                # App subscribers were told nothing while the model refolded: now they get
                # each app as it is (once rebuilt, or as far as it got).
                self._rebuilding_apps = False
                self._publish_apps(list(self.apps.keys()))
            return RebuildOutcome(
                requested_at=state.requested_at or requested_at,
                finished_at=state.finished_at,
                last_position=state.last_position,
                before=before,
                after=self.model.counts(),
                seconds=loop.time() - started,
                ledger_finished_at=ledger_state.finished_at,
            )

    async def _settled(self, deadline: float) -> None:
        # Deliveries are handled as concurrent tasks, so a few sent before ReplayFinished may
        # still be on their way to the read model: wait until none has come for a moment.
        loop = asyncio.get_running_loop()
        while True:
            quiet_for = loop.time() - self._last_tracked
            if quiet_for >= self.settle or loop.time() >= deadline:
                return
            await asyncio.sleep(self.settle - quiet_for)

    # -- subscriptions ---------------------------------------------------------------------------

    async def deployment_updates(
        self,
        deployment_id: uuid.UUID,
        after: int | None = None,
        *,
        sink: Sink[DeploymentRecord] | None = None,
    ) -> AsyncIterator[DeploymentRecord]:
        """The deployment once per status change; ends after a terminal status.

        Without ``after``: the deployment now, then each change. With ``after``: each status
        change after the deployment's ``sequence`` ``after``, in order (what a client that
        saw it up to there missed), then live ones; nothing it has seen is sent again.
        With ``sink``: whatever it sends, caught up, is not yielded.
        """
        with self.updates.subscribe(deployment_id) as subscription:
            dropped = 0  # what its queue lost, even while the client was reading a yield
            # Subscribing and reading the current state happen without a suspension point
            # in between, so no change can fall between the two.
            record = self.model.deployment(deployment_id)
            if record is None:
                record = await self._first(subscription, deployment_id)
            last_status: DeploymentStatus | None
            if after is None:
                yield record
                seen, last_status = record.sequence, record.status
            else:
                seen, last_status = after, status_at(record, after)
                if last_status is not None:
                    for state in status_changes(record, after):
                        yield state
                        seen, last_status = state.sequence, state.status
                    seen = max(seen, record.sequence)
            while last_status is None or not last_status.is_terminal:
                if (
                    sink is not None
                    and last_status is not None
                    and not subscription.pending
                    and subscription.dropped == dropped
                ):
                    # Caught up: what the client was sent by the yields is on its socket
                    # (strawberry resumes this generator only after sending), so the sink
                    # may write the next ones, in order, until it cannot or the end.
                    direct = _DirectStatusChanges(sink, seen, last_status)
                    await subscription.hand_over(direct)
                    seen, last_status = direct.seen, direct.last_status
                    continue
                item = await subscription.get()
                if last_status is None:
                    # Resuming beyond what this process had folded: wait until it has.
                    last_status = status_at(item, seen)
                    if last_status is None:
                        continue
                if item.sequence <= seen:
                    continue  # already seen, or the model is being rebuilt below it
                if subscription.dropped != dropped:
                    # The queue overflowed: the changes it lost are in the stored events.
                    dropped = subscription.dropped
                    for state in status_changes(item, seen, upto=item.sequence - 1):
                        yield state
                        seen, last_status = state.sequence, state.status
                if item.status != last_status:
                    yield item
                    last_status = item.status
                seen = item.sequence

    async def deployment_logs(
        self,
        deployment_id: uuid.UUID,
        after: int | None = None,
        attempt: int | None = None,
        *,
        sink: Sink[LogLine] | None = None,
    ) -> AsyncIterator[LogLine]:
        """The lines kept so far, then live ones; ends shortly after a terminal status.

        With ``after`` (and ``attempt``, default 1): only the lines after line ``after`` of
        that attempt, so a client that reconnects gets exactly what it missed. Lines rotated
        out of the buffer are announced by one SYSTEM line saying how many. With ``sink``:
        whatever it sends, caught up, is not yielded.
        """
        cursor: LogKey | None = None if after is None else (attempt or 1, after)
        with self.logs.subscribe(deployment_id) as subscription:
            record = self.model.deployment(deployment_id)
            backlog = self.model.logs.lines(deployment_id, after=cursor)
            if record is None and not self.model.logs.known(deployment_id):
                first = await self._first(subscription, deployment_id)
                if isinstance(first, LogLine):
                    backlog = self.model.logs.lines(deployment_id, after=cursor)
                else:
                    record = first
            for line in backlog:
                yield line
                cursor = log_key(line)
            if record is not None and record.status.is_terminal:
                return
            deadline: float | None = None  # set once terminal: late lines may still come
            loop = asyncio.get_running_loop()
            dropped = 0  # what its queue lost, even while the client was reading the backlog
            while True:
                if (
                    sink is not None
                    and deadline is None
                    and not subscription.pending
                    and subscription.dropped == dropped
                ):
                    # Caught up (see deployment_updates); handed back at a terminal status,
                    # whose grace period for late lines this loop keeps.
                    direct = _DirectLogLines(sink, cursor)
                    await subscription.hand_over(direct)
                    cursor = direct.cursor
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    return
                try:
                    item = await asyncio.wait_for(subscription.get(), timeout)
                except TimeoutError:
                    return
                if subscription.dropped != dropped:
                    # Fell behind: what the queue lost is in the buffer (or said to be gone).
                    dropped = subscription.dropped
                    for line in self.model.logs.lines(deployment_id, after=cursor):
                        yield line
                        cursor = log_key(line)
                    current = self.model.deployment(deployment_id)
                    if current is not None and current.status.is_terminal and deadline is None:
                        deadline = loop.time() + self.log_grace
                if isinstance(item, LogLine):
                    if cursor is None or log_key(item) > cursor:
                        yield item
                        cursor = log_key(item)
                elif item.status.is_terminal and deadline is None:
                    # Lines travel node -> api directly, the status via the orchestrator:
                    # the last lines may arrive just after it.
                    deadline = loop.time() + self.log_grace

    async def app_updates(
        self, name: str, *, sink: Sink[AppRecord] | None = None
    ) -> AsyncIterator[AppRecord]:
        """The app now, then again each time one of its deployments changes status (or its
        watch setting changes). Never ends by itself. With ``sink``: whatever it sends,
        caught up, is not yielded."""
        with self.apps.subscribe(name) as subscription:
            record = self.model.app(name)
            if record is None:
                record = await self._first(subscription, f"no app named {name!r}")
            yield record
            while True:
                if sink is not None and not subscription.pending:
                    await subscription.hand_over(_DirectEvery(sink))  # see deployment_updates
                yield await subscription.get()

    async def _first(self, subscription: Subscription[Any, T], missing: object) -> T:
        # A deployment requested through another api process, or not replayed yet, appears
        # later: wait for it a while, and as long as the read model is rebuilding.
        while True:
            try:
                return await asyncio.wait_for(subscription.get(), self.unknown_wait)
            except TimeoutError:
                if not self.replay.rebuilding:
                    if isinstance(missing, uuid.UUID):
                        raise NotFound(f"no deployment with id {missing}") from None
                    raise NotFound(str(missing)) from None


def _rebuilding_message(state: ReplayState) -> str:
    if state.requested_at is None:
        why = (
            f"this api has not yet been able to ask the {state.origin} for a replay of its "
            f"log (RabbitMQ or the {state.origin} is not reachable yet; it keeps asking)"
        )
    else:
        why = (
            f"it asked the {state.origin} for a replay of its log at "
            f"{state.requested_at.isoformat()} and the replay has not finished"
        )
    return (
        f"the read model is being rebuilt: {why}; ask again shortly "
        "(readModel { rebuilding } and /healthz say when it is ready)"
    )


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0
