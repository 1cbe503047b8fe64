"""The api's read model: a pure projection of integration messages, rebuilt at every start.

The api writes nothing (DESIGN section 2); everything it shows is folded from the events the
orchestrator's relay publishes, plus node heartbeats and log lines. Messages may arrive
twice or out of order (a replay runs beside live delivery), so nothing here depends on
arrival order: each deployment keeps its events keyed by ``(origin, position, tag)``, the
relay's coordinates of a message, and its status, history and fields are computed by folding
those events in position order. The same set of messages, received in any order with any
duplicates, gives the same answers.

Nothing in this module does I/O or knows about RabbitMQ or GraphQL.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentCancelled,
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
    LogLine,
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
)
_LIFECYCLE_RANK: Final[dict[str, int]] = {tag_of(cls): rank for rank, cls in enumerate(_LIFECYCLE)}

# --- records: what queries answer --------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One status a deployment went through, when, and a sentence about it."""

    status: DeploymentStatus
    at: datetime
    message: str


@dataclass(frozen=True)
class EventEntry:
    """One integration event of a deployment, as received (``data`` is its JSON)."""

    sequence: int
    origin: str
    position: int
    type: str
    at: datetime
    data: str


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


def _order(item: tuple[Key, DeploymentEvent]) -> tuple[int, str, int]:
    (origin, position, tag), _ = item
    return position, origin, _LIFECYCLE_RANK.get(tag, len(_LIFECYCLE_RANK))


def fold_deployment(
    deployment_id: uuid.UUID, events: Iterable[tuple[Key, DeploymentEvent]]
) -> DeploymentRecord | None:
    """Fold one deployment's events (any order, duplicates allowed) into its record.

    Returns None until the deployment's ``DeploymentRequested`` is among them: a deployment
    is shown once its request is known, so every field a client relies on has a value.
    """
    ordered = sorted(dict(events).items(), key=_order)
    requested = next((e for _, e in ordered if isinstance(e, DeploymentRequested)), None)
    if requested is None:
        return None
    record = DeploymentRecord(
        id=deployment_id,
        app=requested.app,
        repo_url=requested.repo_url,
        branch=requested.branch,
        commit=requested.commit,
        status=DeploymentStatus.REQUESTED,
        trigger=requested.trigger,
        actor=requested.actor,
        watch=requested.watch,
        node_id=None,
        attempt=1,
        url=None,
        error=None,
        warnings=(),
        requested_at=requested.at,
        updated_at=requested.at,
        running_position=None,
        history=(),
        events=(),
    )
    history: list[HistoryEntry] = []
    entries: list[EventEntry] = []
    for (origin, position, tag), event in ordered:
        record = _apply(record, event, position)
        history.append(HistoryEntry(status_after(event), event.at, describe(event)))
        entries.append(
            EventEntry(
                sequence=len(entries) + 1,
                origin=origin,
                position=position,
                type=tag,
                at=event.at,
                data=msgspec.json.encode(event).decode(),
            )
        )
    return replace(record, history=tuple(history), events=tuple(entries))


def _apply(record: DeploymentRecord, event: DeploymentEvent, position: int) -> DeploymentRecord:
    # The writer is the only source of these events and records them in order, so the
    # status is that of the last event by position; fields take the latest value seen.
    record = replace(record, status=status_after(event), updated_at=event.at)
    if event.app is not None:
        record = replace(record, app=event.app)
    match event:
        case DeploymentRequested():
            pass  # the record starts from it
        case DeploymentInitialized(repo_url=repo_url, branch=branch, commit=commit):
            record = replace(record, repo_url=repo_url, branch=branch)
            if commit is not None:
                record = replace(record, commit=commit)
        case DeploymentScheduled(node_id=node_id, attempt=attempt):
            record = replace(record, node_id=node_id, attempt=attempt)
        case DeploymentProgressed(node_id=node_id, commit=commit):
            record = replace(record, node_id=node_id)
            if commit is not None:
                record = replace(record, commit=commit)
        case DeploymentRunning():
            record = replace(
                record,
                node_id=event.node_id,
                commit=event.commit,
                url=event.url,
                warnings=tuple(event.warnings),
                running_position=position,
            )
        case DeploymentErrored(reason=reason):
            record = replace(record, error=reason)
        case DeploymentCancelled() | DeploymentSuperseded() | DeploymentStopped():
            pass
    return record


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


def fold_app(
    name: str,
    deployments: Iterable[DeploymentRecord],
    watch_events: Iterable[tuple[Key, AppWatchChanged]],
) -> AppRecord | None:
    """Fold an app from its deployments' records and its watch events (None if neither)."""
    records = sorted(deployments, key=_newest_first)
    watch = max(dict(watch_events).items(), key=lambda item: item[0][1], default=None)
    latest = records[0] if records else None
    running = [r for r in records if r.status is DeploymentStatus.RUNNING]
    # During a zero-downtime takeover two deployments are briefly RUNNING: the one that took
    # the route last (the later DeploymentRunning) is the current one.
    current = max(running, key=lambda r: r.running_position or 0, default=None)
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


# --- node view ---------------------------------------------------------------------------------


@dataclass
class _NodeState:
    heartbeat: NodeHeartbeat
    drained: bool = False
    lost_at: datetime | None = None


@dataclass
class NodesView:
    """Each node's latest heartbeat, and what the scheduler said about it (drained, lost)."""

    nodes: dict[uuid.UUID, _NodeState] = field(default_factory=dict)

    def apply(self, msg: NodeHeartbeat | NodeDrained | NodeLost) -> bool:
        """Fold one message in; returns whether anything changed (an older one changes nothing)."""
        state = self.nodes.get(msg.node_id)
        match msg:
            case NodeHeartbeat():
                if state is not None and state.heartbeat.at >= msg.at:
                    return False
                if state is None:
                    self.nodes[msg.node_id] = _NodeState(msg)
                else:
                    state.heartbeat = msg
                return True
            case NodeDrained():
                if state is None or state.drained:
                    return False
                state.drained = True
                return True
            case NodeLost():
                if state is None or (state.lost_at is not None and state.lost_at >= msg.at):
                    return False
                state.lost_at = msg.at
                return True

    def row(self, node_id: uuid.UUID) -> NodeRow | None:
        """One node, or None if it never sent a heartbeat."""
        state = self.nodes.get(node_id)
        return _row(state) if state is not None else None

    def all(self) -> list[NodeRow]:
        """Every node, by hostname."""
        rows = [_row(s) for s in self.nodes.values()]
        return sorted(rows, key=lambda r: (r.hostname, str(r.node_id)))


def _row(state: _NodeState) -> NodeRow:
    beat = state.heartbeat
    if state.lost_at is not None and state.lost_at >= beat.at:
        status = NodeStatus.LOST  # a node that heartbeats after being declared lost is back
    elif state.drained:
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


class LogBuffers:
    """The latest log lines of recent deployments, bounded in lines and in deployments.

    Lines are kept in ``(attempt, sequence)`` order and a redelivered line is dropped, so a
    subscriber that joins late first gets the lines so far, in order, then live ones.
    """

    def __init__(self, *, max_lines: int = 1000, max_deployments: int = 200) -> None:
        self.max_lines = max_lines
        self.max_deployments = max_deployments
        self._buffers: OrderedDict[uuid.UUID, dict[tuple[int, int], LogLine]] = OrderedDict()

    def add(self, line: LogLine) -> bool:
        """Keep ``line``; returns False for a line already kept (a redelivery)."""
        buffer = self._buffers.get(line.deployment_id)
        if buffer is None:
            buffer = self._buffers[line.deployment_id] = {}
            while len(self._buffers) > self.max_deployments:
                self._buffers.popitem(last=False)  # the least recently active deployment
        else:
            self._buffers.move_to_end(line.deployment_id)
        key = (line.attempt, line.sequence)
        if key in buffer:
            return False
        buffer[key] = line
        if len(buffer) > self.max_lines:
            del buffer[min(buffer)]
        return True

    def lines(self, deployment_id: uuid.UUID) -> list[LogLine]:
        """The kept lines of a deployment, oldest first."""
        buffer = self._buffers.get(deployment_id, {})
        return [buffer[k] for k in sorted(buffer)]


# --- the read model ----------------------------------------------------------------------------

Tracked: TypeAlias = DeploymentEvent | AppWatchChanged
"""Messages from the orchestrator's log: folded by position, so they need its headers."""


@dataclass(frozen=True)
class Change:
    """What one message changed: deployments (with their status before) and apps."""

    deployments: dict[uuid.UUID, DeploymentStatus | None] = field(default_factory=dict)
    apps: frozenset[str] = frozenset()


NO_CHANGE: Final = Change()


class ReadModel:
    """Deployments, apps and nodes as folded from every message received so far."""

    def __init__(self, *, max_pending: int = 1000, log_lines: int = 1000) -> None:
        self._events: dict[uuid.UUID, dict[Key, DeploymentEvent]] = {}
        self._records: dict[uuid.UUID, DeploymentRecord] = {}
        self._by_app: dict[str, set[uuid.UUID]] = {}
        self._watch: dict[str, dict[Key, AppWatchChanged]] = {}
        # Deployments this process asked for whose DeploymentRequested has not arrived yet:
        # shown meanwhile (read-your-writes), replaced by the folded record when it arrives.
        self._pending: OrderedDict[uuid.UUID, DeploymentRecord] = OrderedDict()
        self._max_pending = max_pending
        self.nodes = NodesView()
        self.logs = LogBuffers(max_lines=log_lines)

    # -- writing ---------------------------------------------------------------------------------

    def apply(self, message: Tracked, *, origin: str, position: int) -> Change:
        """Fold a message the orchestrator relayed at ``position`` of its log ``origin``."""
        key: Key = (origin, position, tag_of(message))
        if isinstance(message, AppWatchChanged):
            events = self._watch.setdefault(message.app, {})
            if key in events:
                return NO_CHANGE
            events[key] = message
            return Change(apps=frozenset({message.app}))
        deployment_id = message.deployment_id
        stored = self._events.setdefault(deployment_id, {})
        if key in stored:
            return NO_CHANGE
        stored[key] = message
        before = self.deployment(deployment_id)
        record = fold_deployment(deployment_id, stored.items())
        if record is None:
            return NO_CHANGE  # shown once its DeploymentRequested arrives
        self._pending.pop(deployment_id, None)
        old = self._records.get(deployment_id)
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

    # -- reading ---------------------------------------------------------------------------------

    def deployment(self, deployment_id: uuid.UUID) -> DeploymentRecord | None:
        """One deployment (or a just-requested one), or None if unknown."""
        return self._records.get(deployment_id) or self._pending.get(deployment_id)

    def deployments(self, app: str | None = None, first: int = 50) -> list[DeploymentRecord]:
        """The newest ``first`` deployments, of one app or of all."""
        if app is None:
            records: Iterable[DeploymentRecord] = self._all_records()
        else:
            records = (r for r in self._all_records() if r.app == app)
        return sorted(records, key=_newest_first)[: max(first, 0)]

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

    def _all_records(self) -> Iterator[DeploymentRecord]:
        yield from self._records.values()
        yield from (r for i, r in self._pending.items() if i not in self._records)
