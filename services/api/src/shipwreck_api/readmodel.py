"""The api's read model: a pure projection of integration messages, rebuilt at every start.

The api writes nothing (DESIGN section 2); everything it shows is folded from the events the
orchestrator's relay publishes, plus node heartbeats and log lines. Messages may arrive
twice or out of order (a replay runs beside live delivery), so nothing here depends on
arrival order: each deployment keeps its events keyed by ``(origin, position, tag)``, the
relay's coordinates of a message, and its status, history and fields are computed by folding
those events in position order. The same set of messages, received in any order with any
duplicates, gives the same answers.

Because the events are kept, the past can be asked about too: :func:`state_at` folds only
the events that had happened at a given time, and :func:`diff_states` compares two such
states. Both are pure functions over the stored events.

Nothing in this module does I/O or knows about RabbitMQ or GraphQL.
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, NamedTuple, Protocol, TypeAlias

import msgspec

from shipwreck_api.ledger import DEFAULT_MAX_ENTRIES, Ledger
from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentEvent,
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
    LogStream,
    Message,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    NodeStatus,
    Trigger,
    status_after,
    tag_of,
)

Key: TypeAlias = tuple[str, int, str]
"""Where a relayed message sits in its writer's log: ``(origin, position, tag)``.

The tag is part of the key because one domain event may be announced by several messages
that share its position (the relay's ``Translate`` contract)."""

# Within one position (one domain event announcing several messages) fold in lifecycle order.
_LIFECYCLE: Final[tuple[type[Message], ...]] = (
    DeploymentRequested,
    DeploymentInitialized,
    DeploymentScheduled,
    DeploymentProgressed,
    DeploymentRunning,
    DeploymentSuperseded,
    DeploymentStopped,
    DeploymentErrored,
    DeploymentCancelled,
    DeploymentCancelRefused,
)
_LIFECYCLE_RANK: Final[dict[str, int]] = {tag_of(cls): rank for rank, cls in enumerate(_LIFECYCLE)}
_UNRANKED: Final = len(_LIFECYCLE_RANK)

# --- records: what queries answer --------------------------------------------------------------


class HistoryEntry(NamedTuple):
    """One status a deployment went through, when, and a sentence about it."""

    status: DeploymentStatus
    at: datetime
    message: str


class EventEntry(NamedTuple):
    """One integration event of a deployment, as received, with its place in the fold."""

    sequence: int
    """1, 2, ... in the deployment's (position) order."""
    origin: str
    position: int
    type: str
    at: datetime
    event: DeploymentEvent

    @property
    def key(self) -> Key:
        """Where the event sits in its writer's log."""
        return self.origin, self.position, self.type

    @property
    def data(self) -> str:
        """The message as JSON (encoded when asked for: most views never show it)."""
        return msgspec.json.encode(self.event).decode()


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A deployment as folded from its events."""

    id: uuid.UUID
    app: str | None
    repo_url: str
    branch: str
    commit: str | None
    status: DeploymentStatus
    trigger: Trigger
    actor: str
    watch: bool
    node_id: uuid.UUID | None
    attempt: int
    url: str | None
    error: str | None
    warnings: tuple[str, ...]
    requested_at: datetime
    updated_at: datetime
    running_position: int | None
    """Position of its DeploymentRunning event: the latest RUNNING one is the app's current."""
    history: tuple[HistoryEntry, ...]
    events: tuple[EventEntry, ...]
    sequence: int = 0
    """How many of its events this view folds: increases with every event, so a client can
    say "I have seen it up to here" and resume (0: requested here, no event received yet)."""


@dataclass(frozen=True, slots=True)
class AppRecord:
    """An app: the stable name its deployments share."""

    name: str
    repo_url: str
    branch: str
    watching: bool
    current: DeploymentRecord | None
    latest: DeploymentRecord | None

    @property
    def url(self) -> str | None:
        """The app's route, while a deployment serves it."""
        return self.current.url if self.current is not None else None


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as the api shows it."""

    node_id: uuid.UUID
    hostname: str
    status: NodeStatus
    cpu_count: int
    mem_total_mb: int
    mem_free_mb: int
    load_avg: float
    last_seen_at: datetime
    running: tuple[uuid.UUID, ...]


# --- folding -----------------------------------------------------------------------------------


def order_of(key: Key) -> tuple[int, str, int]:
    """The fold order of an event: log position, then origin, then lifecycle rank."""
    origin, position, tag = key
    return position, origin, _LIFECYCLE_RANK.get(tag, _UNRANKED)


def _order(item: tuple[Key, DeploymentEvent]) -> tuple[int, str, int]:
    return order_of(item[0])


def fold_deployment(
    deployment_id: uuid.UUID,
    events: Iterable[tuple[Key, DeploymentEvent]],
    *,
    until: datetime | None = None,
) -> DeploymentRecord | None:
    """Fold one deployment's events (any order, duplicates allowed) into its record.

    With ``until``, only the events that had happened by then (``at <= until``) count: the
    deployment as it was at that time. Returns None until the deployment's
    ``DeploymentRequested`` is among them: a deployment is shown once its request is known,
    so every field a client relies on has a value.
    """
    if until is None:
        ordered = sorted(dict(events).items(), key=_order)
    else:
        ordered = sorted(((k, e) for k, e in dict(events).items() if e.at <= until), key=_order)
    return _fold(deployment_id, ordered, None)


def extend_deployment(
    record: DeploymentRecord, events: Sequence[tuple[Key, DeploymentEvent]]
) -> DeploymentRecord:
    """``record`` with ``events`` folded in after its own (they must all sort after them).

    The same result as folding everything again, for the cost of the new events only.
    """
    folded = _fold(record.id, events, record)
    assert folded is not None  # a base record always folds to a record
    return folded


def _fold(
    deployment_id: uuid.UUID,
    ordered: Sequence[tuple[Key, DeploymentEvent]],
    base: DeploymentRecord | None,
) -> DeploymentRecord | None:
    # One pass with plain locals and one record at the end: folding is what a rebuild and a
    # time-travel query spend their time on, and a record copy per event would triple it.
    history: list[HistoryEntry]
    entries: list[EventEntry]
    if base is None:
        requested = next((e for _, e in ordered if isinstance(e, DeploymentRequested)), None)
        if requested is None:
            return None
        app, repo_url, branch, commit = (
            requested.app,
            requested.repo_url,
            requested.branch,
            requested.commit,
        )
        status, node_id, attempt = DeploymentStatus.REQUESTED, None, 1
        url, error = None, None
        warnings: tuple[str, ...] = ()
        updated_at, running_position = requested.at, None
        trigger, actor, watch, requested_at = (
            requested.trigger,
            requested.actor,
            requested.watch,
            requested.at,
        )
        history, entries = [], []
    else:
        app, repo_url, branch, commit = base.app, base.repo_url, base.branch, base.commit
        status, node_id, attempt = base.status, base.node_id, base.attempt
        url, error, warnings = base.url, base.error, base.warnings
        updated_at, running_position = base.updated_at, base.running_position
        trigger, actor, watch, requested_at = (
            base.trigger,
            base.actor,
            base.watch,
            base.requested_at,
        )
        history, entries = list(base.history), list(base.events)
    for (origin, position, tag), event in ordered:
        # The writer is the only source of these events and records them in order, so the
        # status is that of the last event by position; fields take the latest value seen.
        status = status_after(event)
        updated_at = event.at
        if event.app is not None:
            app = event.app
        match event:
            case DeploymentInitialized():
                repo_url, branch = event.repo_url, event.branch
                if event.commit is not None:
                    commit = event.commit
            case DeploymentScheduled():
                node_id, attempt = event.node_id, event.attempt
            case DeploymentProgressed():
                node_id = event.node_id
                if event.commit is not None:
                    commit = event.commit
            case DeploymentRunning():
                node_id, commit, url = event.node_id, event.commit, event.url
                warnings = tuple(event.warnings)
                running_position = position
            case DeploymentErrored():
                error = event.reason
            case _:
                pass  # requested (the record starts from it), cancelled (or refused), ...
        history.append(HistoryEntry(status, event.at, describe(event)))
        entries.append(EventEntry(len(entries) + 1, origin, position, tag, event.at, event))
    return DeploymentRecord(
        id=deployment_id,
        app=app,
        repo_url=repo_url,
        branch=branch,
        commit=commit,
        status=status,
        trigger=trigger,
        actor=actor,
        watch=watch,
        node_id=node_id,
        attempt=attempt,
        url=url,
        error=error,
        warnings=warnings,
        requested_at=requested_at,
        updated_at=updated_at,
        running_position=running_position,
        history=tuple(history),
        events=tuple(entries),
        sequence=len(entries),
    )


def status_changes(
    record: DeploymentRecord, after: int, upto: int | None = None
) -> Iterator[DeploymentRecord]:
    """The deployment as it was at each status change after sequence ``after``, in order.

    A status change is an event whose status differs from the one before it (REQUESTED
    before the first). ``record`` must be folded from its events (sequence > 0); each
    earlier state is folded again from the first events, the last one is ``record`` itself.
    This is what a subscriber that resumes with ``after`` missed.
    """
    last = record.sequence if upto is None else min(upto, record.sequence)
    if last <= after or len(record.history) != record.sequence:
        return
    previous = _status_at(record, after)
    prefix = [(e.key, e.event) for e in record.events]
    for sequence in range(max(after, 0) + 1, last + 1):
        status = record.history[sequence - 1].status
        if status == previous:
            continue
        previous = status
        if sequence == record.sequence:
            yield record
        else:
            state = _fold(record.id, prefix[:sequence], None)
            if state is not None:
                yield state


def _status_at(record: DeploymentRecord, sequence: int) -> DeploymentStatus:
    if sequence <= 0 or not record.history:
        return DeploymentStatus.REQUESTED
    return record.history[min(sequence, len(record.history)) - 1].status


def status_at(record: DeploymentRecord, sequence: int) -> DeploymentStatus | None:
    """The status the deployment had after its first ``sequence`` events (None: not folded
    that far yet). Before its first event a deployment is REQUESTED."""
    if sequence <= 0:
        return DeploymentStatus.REQUESTED
    if sequence > record.sequence or len(record.history) != record.sequence:
        return None
    return _status_at(record, sequence)


def describe(event: DeploymentEvent) -> str:
    """A one-line, human-readable account of ``event`` for the deployment's history."""
    match event:
        case DeploymentRequested():
            pinned = f" at {event.commit[:12]}" if event.commit else ""
            return (
                f"{event.trigger.value.lower()} deployment of {event.repo_url} "
                f"branch {event.branch}{pinned}, requested by {event.actor}"
            )
        case DeploymentInitialized():
            return f"accepted as app {event.app}"
        case DeploymentScheduled():
            again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            return f"scheduled on node {event.node_id}{again}"
        case DeploymentProgressed():
            if event.message:
                return event.message
            at = f" commit {event.commit[:12]}" if event.commit else ""
            return f"{event.stage.value.lower()}{at}"
        case DeploymentRunning():
            warned = f" ({len(event.warnings)} warning(s))" if event.warnings else ""
            return f"running commit {event.commit[:12]} at {event.url}{warned}"
        case DeploymentErrored():
            return f"failed while {event.stage.value}: {event.reason}"
        case DeploymentCancelled():
            why = f": {event.reason}" if event.reason else ""
            return f"cancelled by {event.actor} while {event.stage.value}{why}"
        case DeploymentSuperseded():
            return f"superseded by deployment {event.by}"
        case DeploymentStopped():
            why = f": {event.reason}" if event.reason else ""
            return f"stopped by {event.actor}{why}"
        case DeploymentCancelRefused():
            return event.reason


def fold_app(
    name: str,
    deployments: Iterable[DeploymentRecord],
    watch_events: Iterable[tuple[Key, AppWatchChanged]],
) -> AppRecord | None:
    """Fold an app from its deployments' records and its watch events (None if neither)."""
    records = list(deployments)
    watch = max(dict(watch_events).items(), key=lambda item: item[0][1], default=None)
    latest = min(records, key=_newest_first, default=None)
    # During a zero-downtime takeover two deployments are briefly RUNNING: the one that took
    # the route last (the later DeploymentRunning) is the current one.
    current = max(
        (r for r in records if r.status is DeploymentStatus.RUNNING),
        key=lambda r: (r.running_position or 0, str(r.id)),
        default=None,
    )
    if latest is not None:
        repo_url, branch = latest.repo_url, latest.branch
    elif watch is not None:
        repo_url, branch = watch[1].repo_url, watch[1].branch
    else:
        return None
    # The orchestrator announces the watch state (AppWatchChanged); before it has, the
    # newest request says what was asked for.
    if watch is not None:
        watching = watch[1].watching
    else:
        watching = latest.watch if latest is not None else False
    return AppRecord(
        name=name,
        repo_url=repo_url,
        branch=branch,
        watching=watching,
        current=current,
        latest=latest,
    )


def _newest_first(record: DeploymentRecord) -> tuple[float, str]:
    # Newest first, ties broken by id, so that every rebuild lists deployments identically.
    return -record.requested_at.timestamp(), str(record.id)


def newest(records: Iterable[DeploymentRecord], first: int) -> list[DeploymentRecord]:
    """The ``first`` newest of ``records``, newest first (without sorting them all)."""
    return heapq.nsmallest(max(first, 0), records, key=_newest_first)


# --- node view ---------------------------------------------------------------------------------


@dataclass
class _NodeState:
    heartbeat: NodeHeartbeat
    first: NodeHeartbeat
    drained_at: datetime | None = None
    lost_at: datetime | None = None
    samples: deque[NodeHeartbeat] = field(default_factory=deque)
    """Heartbeats kept for looking back: one per sampling interval, the oldest dropped."""
    losses: deque[datetime] = field(default_factory=deque)


@dataclass
class NodesView:
    """Each node's latest heartbeat, what the scheduler said about it (drained, lost), and a
    thinned history of both so that :meth:`at` can show the nodes as they were.

    The history keeps the first heartbeat of every ``sample_interval`` (one a minute by
    default) for the last ``max_samples`` intervals (a day), so looking further back shows a
    node's status exactly and its load and memory from the nearest kept heartbeat.
    """

    nodes: dict[uuid.UUID, _NodeState] = field(default_factory=dict)
    sample_interval: timedelta = timedelta(seconds=60)
    max_samples: int = 1440

    def apply(self, msg: NodeHeartbeat | NodeDrained | NodeLost) -> bool:
        """Fold one message in; returns whether anything changed (an older one changes nothing)."""
        state = self.nodes.get(msg.node_id)
        match msg:
            case NodeHeartbeat():
                if state is not None and state.heartbeat.at >= msg.at:
                    return False
                if state is None:
                    state = self.nodes[msg.node_id] = _NodeState(heartbeat=msg, first=msg)
                else:
                    state.heartbeat = msg
                if not state.samples or msg.at - state.samples[-1].at >= self.sample_interval:
                    state.samples.append(msg)
                    while len(state.samples) > self.max_samples:
                        state.samples.popleft()
                return True
            case NodeDrained():
                if state is None or state.drained_at is not None:
                    return False
                state.drained_at = msg.at
                return True
            case NodeLost():
                if state is None or (state.lost_at is not None and state.lost_at >= msg.at):
                    return False
                state.lost_at = msg.at
                state.losses.append(msg.at)
                while len(state.losses) > self.max_samples:
                    state.losses.popleft()
                return True

    def row(self, node_id: uuid.UUID) -> NodeRow | None:
        """One node, or None if it never sent a heartbeat."""
        state = self.nodes.get(node_id)
        if state is None:
            return None
        return _row(state.heartbeat, drained=state.drained_at is not None, lost_at=state.lost_at)

    def all(self) -> list[NodeRow]:
        """Every node, by hostname."""
        rows = [r for r in (self.row(n) for n in self.nodes) if r is not None]
        return _by_hostname(rows)

    def at(self, when: datetime) -> list[NodeRow]:
        """Every node as it was at ``when`` (those that had sent a heartbeat by then)."""
        rows = []
        for state in self.nodes.values():
            if state.first.at > when:
                continue
            kept = [state.first, *state.samples, state.heartbeat]
            beat = max((b for b in kept if b.at <= when), key=lambda b: b.at)
            lost = max((t for t in state.losses if t <= when), default=None)
            drained = state.drained_at is not None and state.drained_at <= when
            rows.append(_row(beat, drained=drained, lost_at=lost))
        return _by_hostname(rows)


def _by_hostname(rows: list[NodeRow]) -> list[NodeRow]:
    return sorted(rows, key=lambda r: (r.hostname, str(r.node_id)))


def _row(beat: NodeHeartbeat, *, drained: bool, lost_at: datetime | None) -> NodeRow:
    if lost_at is not None and lost_at >= beat.at:
        status = NodeStatus.LOST  # a node that heartbeats after being declared lost is back
    elif drained:
        status = NodeStatus.DRAINED
    else:
        status = NodeStatus.READY
    return NodeRow(
        node_id=beat.node_id,
        hostname=beat.hostname,
        status=status,
        cpu_count=beat.cpu_count,
        mem_total_mb=beat.mem_total_mb,
        mem_free_mb=beat.mem_free_mb,
        load_avg=beat.load_avg,
        last_seen_at=beat.at,
        running=tuple(beat.running),
    )


# --- log lines ---------------------------------------------------------------------------------

LogKey: TypeAlias = tuple[int, int]
"""Where a log line sits in its deployment's output: ``(attempt, sequence)``."""


def log_key(line: LogLine) -> LogKey:
    """The order of ``line`` among its deployment's lines."""
    return line.attempt, line.sequence


@dataclass
class _Dropped:
    count: int = 0
    first: int = 0
    last: int = 0


@dataclass
class _LogBuffer:
    lines: dict[LogKey, LogLine] = field(default_factory=dict)
    """Kept lines in key order (insertion order is kept sorted)."""
    dropped: dict[int, _Dropped] = field(default_factory=dict)
    """Lines rotated out, per attempt: how many and their sequence range."""
    last_dropped: LogLine | None = None

    @property
    def dropped_count(self) -> int:
        return sum(d.count for d in self.dropped.values())

    def dropped_after(self, cursor: LogKey | None) -> int:
        """How many rotated-out lines come after ``cursor`` (all of them for None)."""
        if cursor is None:
            return self.dropped_count
        attempt, sequence = cursor
        total = 0
        for a, d in self.dropped.items():
            if a > attempt:
                total += d.count
            elif a == attempt and sequence < d.last:
                # Sequences count up by one per line, so the range says how many.
                total += min(d.count, d.last - max(sequence, d.first - 1))
        return total


class LogBuffers:
    """The latest log lines of recent deployments, bounded in lines and in deployments.

    Each deployment keeps its newest ``max_lines`` lines in ``(attempt, sequence)`` order:
    when a line more arrives, the oldest is dropped and counted, and whoever asks for the
    lines from before the kept ones gets a SYSTEM line saying how many were dropped in their
    place. A redelivered line is dropped, so a subscriber that joins late first gets the
    lines so far, in order, then live ones. Only the ``max_deployments`` most recently active
    deployments keep lines at all.
    """

    def __init__(self, *, max_lines: int = 1000, max_deployments: int = 200) -> None:
        if max_lines < 1 or max_deployments < 1:
            raise ValueError("log buffers keep at least one line of one deployment")
        self.max_lines = max_lines
        self.max_deployments = max_deployments
        self._buffers: OrderedDict[uuid.UUID, _LogBuffer] = OrderedDict()

    def add(self, line: LogLine) -> bool:
        """Keep ``line``; returns False for a line already kept (a redelivery)."""
        buffer = self._buffers.get(line.deployment_id)
        if buffer is None:
            buffer = self._buffers[line.deployment_id] = _LogBuffer()
            while len(self._buffers) > self.max_deployments:
                self._buffers.popitem(last=False)  # the least recently active deployment
        else:
            self._buffers.move_to_end(line.deployment_id)
        lines = buffer.lines
        key = log_key(line)
        if key in lines:
            return False
        if buffer.last_dropped is not None and key <= log_key(buffer.last_dropped):
            return False  # older than what was already rotated out: as good as dropped
        newest = next(reversed(lines), None)
        lines[key] = line
        if newest is not None and key < newest:
            # Out of order (rare: a late line): keep insertion order sorted.
            ordered = sorted(lines.items())
            lines.clear()
            lines.update(ordered)
        while len(lines) > self.max_lines:
            oldest = next(iter(lines))
            self._drop(buffer, lines.pop(oldest))
        return True

    @staticmethod
    def _drop(buffer: _LogBuffer, line: LogLine) -> None:
        dropped = buffer.dropped.get(line.attempt)
        if dropped is None:
            buffer.dropped[line.attempt] = _Dropped(1, line.sequence, line.sequence)
        else:
            dropped.count += 1
            dropped.first = min(dropped.first, line.sequence)
            dropped.last = max(dropped.last, line.sequence)
        buffer.last_dropped = line

    def lines(self, deployment_id: uuid.UUID, after: LogKey | None = None) -> list[LogLine]:
        """The kept lines of a deployment after ``after`` (all without it), oldest first.

        If lines after ``after`` were rotated out, a SYSTEM line saying how many comes first,
        in their place: it carries the attempt and sequence of the last line dropped, so a
        client resuming after it gets exactly the kept lines.
        """
        buffer = self._buffers.get(deployment_id)
        if buffer is None:
            return []
        kept = [line for key, line in buffer.lines.items() if after is None or key > after]
        missing = buffer.dropped_after(after)
        last = buffer.last_dropped
        if missing and last is not None:
            notice = LogLine(
                deployment_id=deployment_id,
                attempt=last.attempt,
                stream=LogStream.SYSTEM,
                sequence=last.sequence,
                text=(
                    f"{missing} earlier line{'s' if missing != 1 else ''} dropped "
                    f"(the api keeps the last {self.max_lines} lines of a deployment)"
                ),
                at=last.at,
            )
            kept.insert(0, notice)
        return kept

    def dropped(self, deployment_id: uuid.UUID) -> int:
        """How many lines of a deployment were rotated out so far."""
        buffer = self._buffers.get(deployment_id)
        return buffer.dropped_count if buffer is not None else 0

    def known(self, deployment_id: uuid.UUID) -> bool:
        """Whether any line of the deployment was received (and is still tracked)."""
        return deployment_id in self._buffers


# --- state at a time, and what changed between two ---------------------------------------------


class View(Protocol):
    """What the GraphQL types read besides a record: the live read model or a past state."""

    def deployments(self, app: str | None = None, first: int = 50) -> list[DeploymentRecord]:
        """The newest ``first`` deployments, of one app or of all."""
        ...

    def running_on(self, node_id: uuid.UUID) -> list[DeploymentRecord]:
        """The RUNNING deployments placed on ``node_id``, newest first."""
        ...


@dataclass(frozen=True)
class PlatformState:
    """Apps, deployments and nodes as they were at ``at``."""

    at: datetime
    records: Mapping[uuid.UUID, DeploymentRecord]
    app_records: Mapping[str, AppRecord]
    node_rows: tuple[NodeRow, ...]

    def deployment(self, deployment_id: uuid.UUID) -> DeploymentRecord | None:
        """One deployment as it was, or None if it had not been requested yet."""
        return self.records.get(deployment_id)

    def deployments(self, app: str | None = None, first: int = 50) -> list[DeploymentRecord]:
        """The newest ``first`` deployments of the time, of one app or of all."""
        records = self.records.values()
        if app is None:
            return newest(records, first)
        return newest((r for r in records if r.app == app), first)

    def app(self, name: str) -> AppRecord | None:
        """One app as it was."""
        return self.app_records.get(name)

    def apps(self) -> list[AppRecord]:
        """Every app of the time, by name."""
        return [self.app_records[n] for n in sorted(self.app_records)]

    def nodes(self) -> list[NodeRow]:
        """Every node of the time, by hostname."""
        return list(self.node_rows)

    def running_on(self, node_id: uuid.UUID) -> list[DeploymentRecord]:
        """The deployments RUNNING on ``node_id`` at the time, newest first."""
        return sorted(
            (
                r
                for r in self.records.values()
                if r.node_id == node_id and r.status is DeploymentStatus.RUNNING
            ),
            key=_newest_first,
        )


class Folded(NamedTuple):
    """Deployments already folded from all their events, to reuse where nothing is newer."""

    records: Mapping[uuid.UUID, DeploymentRecord]
    latest_at: Mapping[uuid.UUID, datetime]
    """The latest ``at`` among each deployment's events."""


def state_at(
    at: datetime,
    events: Mapping[uuid.UUID, Mapping[Key, DeploymentEvent]],
    watch: Mapping[str, Mapping[Key, AppWatchChanged]],
    nodes: NodesView | None = None,
    *,
    folded: Folded | None = None,
) -> PlatformState:
    """The platform as it was at ``at``: every deployment and app folded from only the events
    that had happened by then (``event.at <= at``), and the nodes as they were.

    ``folded`` is an optimisation that changes no answer: a deployment whose events all
    happened by ``at`` is its current record, and one requested after ``at`` did not exist.
    Only the deployments in progress at ``at`` are folded again.
    """
    records: dict[uuid.UUID, DeploymentRecord] = {}
    for deployment_id, stored in events.items():
        if folded is not None:
            current = folded.records.get(deployment_id)
            if current is not None and current.sequence == len(stored):
                if current.requested_at > at:
                    continue
                latest = folded.latest_at.get(deployment_id)
                if latest is not None and latest <= at:
                    records[deployment_id] = current
                    continue
        record = fold_deployment(deployment_id, stored.items(), until=at)
        if record is not None:
            records[deployment_id] = record
    by_app: dict[str, list[DeploymentRecord]] = {}
    for record in records.values():
        if record.app is not None:
            by_app.setdefault(record.app, []).append(record)
    apps: dict[str, AppRecord] = {}
    for name in by_app.keys() | watch.keys():
        watched = [(k, e) for k, e in watch.get(name, {}).items() if e.at <= at]
        app = fold_app(name, by_app.get(name, ()), watched)
        if app is not None:
            apps[name] = app
    node_rows = tuple(nodes.at(at)) if nodes is not None else ()
    return PlatformState(at=at, records=records, app_records=apps, node_rows=node_rows)


@dataclass(frozen=True, slots=True)
class DeploymentChange:
    """A deployment whose status differs between two moments (None: it did not exist)."""

    id: uuid.UUID
    app: str | None
    before: DeploymentStatus | None
    after: DeploymentStatus | None
    record: DeploymentRecord
    """The deployment as it was at the later moment (at the earlier one if gone by then)."""


@dataclass(frozen=True, slots=True)
class CurrentChange:
    """An app whose current deployment differs between two moments."""

    app: str
    before: DeploymentRecord | None
    after: DeploymentRecord | None


@dataclass(frozen=True)
class StateDiff:
    """What changed between two states of the platform."""

    before: PlatformState
    after: PlatformState
    deployments: tuple[DeploymentChange, ...]
    """Deployments whose status changed (or that appeared), oldest request first."""
    current: tuple[CurrentChange, ...]
    """Apps whose current deployment changed, by name."""
    added_apps: tuple[str, ...]
    removed_apps: tuple[str, ...]


def diff_states(before: PlatformState, after: PlatformState) -> StateDiff:
    """What changed from ``before`` to ``after`` (either may be the later one)."""
    changes = []
    for deployment_id in before.records.keys() | after.records.keys():
        old, new = before.records.get(deployment_id), after.records.get(deployment_id)
        old_status = old.status if old is not None else None
        new_status = new.status if new is not None else None
        if old_status == new_status:
            continue
        shown = new if new is not None else old
        assert shown is not None
        changes.append(DeploymentChange(deployment_id, shown.app, old_status, new_status, shown))
    changes.sort(key=lambda c: (c.record.requested_at, str(c.id)))
    current = []
    for name in sorted(before.app_records.keys() | after.app_records.keys()):
        old_app, new_app = before.app(name), after.app(name)
        old_current = old_app.current if old_app is not None else None
        new_current = new_app.current if new_app is not None else None
        old_id = old_current.id if old_current is not None else None
        new_id = new_current.id if new_current is not None else None
        if old_id != new_id:
            current.append(CurrentChange(name, old_current, new_current))
    return StateDiff(
        before=before,
        after=after,
        deployments=tuple(changes),
        current=tuple(current),
        added_apps=tuple(sorted(after.app_records.keys() - before.app_records.keys())),
        removed_apps=tuple(sorted(before.app_records.keys() - after.app_records.keys())),
    )


# --- the read model ----------------------------------------------------------------------------

Tracked: TypeAlias = DeploymentEvent | AppWatchChanged
"""Messages from the orchestrator's log: folded by position, so they need its headers."""


@dataclass(frozen=True)
class Change:
    """What one message changed: deployments (with their status before) and apps."""

    deployments: dict[uuid.UUID, DeploymentStatus | None] = field(default_factory=dict)
    apps: frozenset[str] = frozenset()
    watched: frozenset[str] = frozenset()
    """Apps whose watch setting was announced."""


NO_CHANGE: Final = Change()


@dataclass(frozen=True)
class Counts:
    """How much the read model holds."""

    deployments: int
    apps: int
    events: int
    ledger_entries: int = 0
    """Trigger-ledger entries kept (from the watcher's log)."""


class ReadModel:
    """Deployments, apps and nodes as folded from every message received so far."""

    def __init__(
        self,
        *,
        max_pending: int = 1000,
        log_lines: int = 1000,
        log_deployments: int = 200,
        logs: LogBuffers | None = None,
        nodes: NodesView | None = None,
        ledger_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._events: dict[uuid.UUID, dict[Key, DeploymentEvent]] = {}
        self._latest_at: dict[uuid.UUID, datetime] = {}
        self._records: dict[uuid.UUID, DeploymentRecord] = {}
        self._by_app: dict[str, set[uuid.UUID]] = {}
        self._watch: dict[str, dict[Key, AppWatchChanged]] = {}
        self.event_count = 0
        # Deployments this process asked for whose DeploymentRequested has not arrived yet:
        # shown meanwhile (read-your-writes), replaced by the folded record when it arrives.
        self._pending: OrderedDict[uuid.UUID, DeploymentRecord] = OrderedDict()
        self._max_pending = max_pending
        self.nodes = nodes if nodes is not None else NodesView()
        self.ledger = Ledger(max_entries=ledger_entries)
        self.logs = (
            logs
            if logs is not None
            else LogBuffers(max_lines=log_lines, max_deployments=log_deployments)
        )

    def emptied(self) -> ReadModel:
        """A read model without the orchestrator's events and the watcher's ledger, to
        rebuild from replays.

        What no replay can bring back stays: the node view and log lines (they come straight
        from the nodes, not from a log), and the deployments requested here and not
        recorded yet.
        """
        model = ReadModel(
            max_pending=self._max_pending,
            logs=self.logs,
            nodes=self.nodes,
            ledger_entries=self.ledger.max_entries,
        )
        model._pending = OrderedDict(self._pending)
        return model

    # -- writing ---------------------------------------------------------------------------------

    def apply(self, message: Tracked, *, origin: str, position: int) -> Change:
        """Fold a message the orchestrator relayed at ``position`` of its log ``origin``."""
        key: Key = (origin, position, tag_of(message))
        if isinstance(message, AppWatchChanged):
            events = self._watch.setdefault(message.app, {})
            if key in events:
                return NO_CHANGE
            events[key] = message
            self.event_count += 1
            watched = frozenset({message.app})
            return Change(apps=watched, watched=watched)
        deployment_id = message.deployment_id
        stored = self._events.setdefault(deployment_id, {})
        if key in stored:
            return NO_CHANGE
        stored[key] = message
        self.event_count += 1
        latest = self._latest_at.get(deployment_id)
        if latest is None or message.at > latest:
            self._latest_at[deployment_id] = message.at
        before = self.deployment(deployment_id)
        old = self._records.get(deployment_id)
        if old is not None and old.events and order_of(key) > order_of(old.events[-1].key):
            record: DeploymentRecord | None = extend_deployment(old, [(key, message)])
        else:
            record = fold_deployment(deployment_id, stored.items())
        if record is None:
            return NO_CHANGE  # shown once its DeploymentRequested arrives
        self._pending.pop(deployment_id, None)
        apps = {a for a in (old.app if old else None, record.app) if a is not None}
        if old is not None and old.app is not None and old.app != record.app:
            self._by_app.get(old.app, set()).discard(deployment_id)
        if record.app is not None:
            self._by_app.setdefault(record.app, set()).add(deployment_id)
        self._records[deployment_id] = record
        return Change(
            deployments={deployment_id: before.status if before else None},
            apps=frozenset(apps),
        )

    def apply_node(self, message: NodeHeartbeat | NodeDrained | NodeLost) -> bool:
        """Fold a node message; returns whether the node view changed."""
        return self.nodes.apply(message)

    def apply_ledger(self, entry: LedgerEntryRecorded, *, origin: str, position: int) -> bool:
        """Keep a ledger entry the watcher relayed at ``position`` of its log ``origin``."""
        return self.ledger.apply(entry, origin=origin, position=position)

    def apply_log(self, line: LogLine) -> bool:
        """Keep a log line; returns False for a redelivered one."""
        return self.logs.add(line)

    def expect(self, record: DeploymentRecord) -> None:
        """Show a deployment this process just requested until its events arrive."""
        if record.id in self._records:
            return
        self._pending[record.id] = record
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)

    def tracked(self) -> Iterator[tuple[Tracked, str, int]]:
        """Every orchestrator message held, with its origin and position."""
        for events in self._events.values():
            for (origin, position, _), message in events.items():
                yield message, origin, position
        for watch_events in self._watch.values():
            for (origin, position, _), watch in watch_events.items():
                yield watch, origin, position

    # -- reading ---------------------------------------------------------------------------------

    def deployment(self, deployment_id: uuid.UUID) -> DeploymentRecord | None:
        """One deployment (or a just-requested one), or None if unknown."""
        return self._records.get(deployment_id) or self._pending.get(deployment_id)

    def deployments(self, app: str | None = None, first: int = 50) -> list[DeploymentRecord]:
        """The newest ``first`` deployments, of one app or of all."""
        if app is None:
            return newest(self._all_records(), first)
        return newest((r for r in self._all_records() if r.app == app), first)

    def app(self, name: str) -> AppRecord | None:
        """One app, or None if no deployment or watch event names it."""
        ids = self._by_app.get(name, set())
        return fold_app(
            name,
            (self._records[i] for i in ids),
            self._watch.get(name, {}).items(),
        )

    def apps(self) -> list[AppRecord]:
        """Every app, by name."""
        names = sorted({n for n, ids in self._by_app.items() if ids} | set(self._watch))
        return [a for a in (self.app(n) for n in names) if a is not None]

    def running_on(self, node_id: uuid.UUID) -> list[DeploymentRecord]:
        """The RUNNING deployments placed on ``node_id``, newest first."""
        return sorted(
            (
                r
                for r in self._records.values()
                if r.node_id == node_id and r.status is DeploymentStatus.RUNNING
            ),
            key=_newest_first,
        )

    def state_at(self, at: datetime) -> PlatformState:
        """The platform as it was at ``at``, from the events held (see :func:`state_at`)."""
        return state_at(
            at,
            self._events,
            self._watch,
            self.nodes,
            folded=Folded(self._records, self._latest_at),
        )

    def counts(self) -> Counts:
        """How many deployments, apps and orchestrator events the read model holds."""
        apps = sum(1 for ids in self._by_app.values() if ids) + sum(
            1 for name in self._watch if not self._by_app.get(name)
        )
        return Counts(
            deployments=len(self._records),
            apps=apps,
            events=self.event_count,
            ledger_entries=self.ledger.count,
        )

    def _all_records(self) -> Iterator[DeploymentRecord]:
        yield from self._records.values()
        yield from (r for i, r in self._pending.items() if i not in self._records)
