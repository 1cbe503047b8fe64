"""The GraphQL schema (DESIGN section 7). Resolvers are thin: they read the pure read model
or call :class:`~shipwreck_api.commands.Actions`, and convert records to GraphQL types.

The names here are a public contract (clients and tests rely on them); they may be added
to, never renamed. ``contracts/schema.graphql`` holds the printed SDL and a test fails when
it drifts from this module.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.types import ExecutionContext, Info

from shipwreck_api import direct, readmodel
from shipwreck_api.commands import Actions
from shipwreck_api.errors import ApiError, Refused
from shipwreck_api.fanout import SharedResultExecutor
from shipwreck_api.ledger import LedgerRow
from shipwreck_api.live import Live, RebuildOutcome, ReplayState
from shipwreck_api.readmodel import (
    AppRecord,
    Counts,
    CurrentChange,
    DeploymentChange,
    DeploymentRecord,
    EventEntry,
    HistoryEntry,
    NodeRow,
    View,
    diff_states,
)
from shipwreck_contracts import DeploymentStatus, LogStream, NodeStatus, Trigger
from shipwreck_contracts import LogLine as _LogLine

# The GraphQL enums are the contracts' enums, so values are spelled alike everywhere.
strawberry.enum(DeploymentStatus, description="The lifecycle status of a deployment.")
strawberry.enum(Trigger, description="What started a deployment.")
strawberry.enum(LogStream, description="Where a log line came from.")
strawberry.enum(NodeStatus, description="A worker node's status.")


@dataclass
class ApiContext:
    """What every resolver needs, built once per request or websocket connection."""

    live: Live
    actions: Actions
    actor: str
    socket: direct.FrameSocket | None = None
    """The websocket of a subscription, when updates can be written to it directly."""


def _ctx(info: Info[Any, Any]) -> ApiContext:
    context: ApiContext = info.context["api"]
    return context


DEFAULT_PAGE = 50


def _page(first: int | None) -> int:
    # `first: Int = 50` is nullable in the contract; null means the default.
    return DEFAULT_PAGE if first is None else first


def _uuid(value: str, what: str = "deployment") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Refused(f"{value!r} is not a {what} id (a UUID)") from None


def _aware(value: datetime) -> datetime:
    # Events carry aware times; a time given without an offset is taken as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _view(info: Info[Any, Any], view: View | None) -> View:
    return view if view is not None else _ctx(info).live.model


# --- types -------------------------------------------------------------------------------------


@strawberry.type(description="One status a deployment went through.")
class StatusChange:
    status: DeploymentStatus
    at: datetime
    message: str

    @staticmethod
    def of(entry: HistoryEntry) -> StatusChange:
        """The GraphQL view of a history entry."""
        return StatusChange(status=entry.status, at=entry.at, message=entry.message)


@strawberry.type(description="One integration event of a deployment, as the api received it.")
class DeploymentEvent:
    sequence: int = strawberry.field(description="1, 2, ... in the deployment's order.")
    type: str = strawberry.field(description="The message tag, e.g. deployment.running.v1.")
    at: datetime
    data: str = strawberry.field(description="The message as JSON.")
    origin: str = strawberry.field(description="The event store that recorded it.")
    position: int = strawberry.field(description="Its position in that store's log.")

    @staticmethod
    def of(entry: EventEntry) -> DeploymentEvent:
        """The GraphQL view of an event entry."""
        return DeploymentEvent(
            sequence=entry.sequence,
            type=entry.type,
            at=entry.at,
            data=entry.data,
            origin=entry.origin,
            position=entry.position,
        )


@strawberry.type(description="One deployment of a repository branch.")
class Deployment:
    record: strawberry.Private[DeploymentRecord]

    def shared_identity(self) -> object:
        """The record: one object for every subscriber of one update (see fanout)."""
        return self.record

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.record.id))

    @strawberry.field(description="The app, once the orchestrator has bound the deployment.")
    def app(self) -> str | None:
        return self.record.app

    @strawberry.field
    def repo_url(self) -> str:
        return self.record.repo_url

    @strawberry.field
    def branch(self) -> str:
        return self.record.branch

    @strawberry.field(description="The full commit SHA, once resolved.")
    def commit(self) -> str | None:
        return self.record.commit

    @strawberry.field
    def status(self) -> DeploymentStatus:
        return self.record.status

    @strawberry.field
    def trigger(self) -> Trigger:
        return self.record.trigger

    @strawberry.field(description="Who asked for it: a token's name, or system:<service>.")
    def actor(self) -> str:
        return self.record.actor

    @strawberry.field(description="The id of the node it was placed on.")
    def node(self) -> strawberry.ID | None:
        return strawberry.ID(str(self.record.node_id)) if self.record.node_id else None

    @strawberry.field(description="Placement attempt: above 1 after a reschedule.")
    def attempt(self) -> int:
        return self.record.attempt

    @strawberry.field(description="Where it serves, once RUNNING.")
    def url(self) -> str | None:
        return self.record.url

    @strawberry.field(description="Why it failed, when ERRORED.")
    def error(self) -> str | None:
        return self.record.error

    @strawberry.field(description="Non-fatal findings, such as unknown Shipwreck.toml keys.")
    def warnings(self) -> list[str]:
        return list(self.record.warnings)

    @strawberry.field
    def requested_at(self) -> datetime:
        return self.record.requested_at

    @strawberry.field(description="When its latest event happened.")
    def updated_at(self) -> datetime:
        return self.record.updated_at

    @strawberry.field(description="Every status it went through, oldest first.")
    def history(self) -> list[StatusChange]:
        return [StatusChange.of(h) for h in self.record.history]

    @strawberry.field(description="Every event recorded for it, oldest first.")
    def events(self) -> list[DeploymentEvent]:
        return [DeploymentEvent.of(e) for e in self.record.events]

    @strawberry.field(
        description=(
            "How many of its events this view folds (the last event's sequence): it grows "
            "with every event, so a subscriber can resume with deploymentUpdates(after:)."
        )
    )
    def sequence(self) -> int:
        return self.record.sequence

    @strawberry.field(
        description=(
            "The log lines the api keeps (the newest SHIPWRECK_LOG_BUFFER_LINES), after line "
            "`after` of `attempt` (default 1) if given; a SYSTEM line stands in for lines "
            "rotated out."
        )
    )
    def logs(
        self,
        info: Info[Any, Any],
        after: int | None = strawberry.UNSET,
        attempt: int | None = strawberry.UNSET,
    ) -> list[LogLine]:
        cursor = None if after is None or after is strawberry.UNSET else (attempt or 1, after)
        lines = _ctx(info).live.model.logs.lines(self.record.id, after=cursor)
        return [LogLine(line=line) for line in lines]

    @strawberry.field(description="How many of its log lines were rotated out of the api's buffer.")
    def logs_dropped(self, info: Info[Any, Any]) -> int:
        return _ctx(info).live.model.logs.dropped(self.record.id)


@strawberry.type(
    description=(
        "One entry of the trigger ledger: a commit the watcher saw, a webhook it accepted "
        "or rejected (and why), a rollback pinning an app."
    )
)
class LedgerEntry:
    row: strawberry.Private[LedgerRow]

    @strawberry.field(description="When the watcher recorded it.")
    def at(self) -> datetime:
        return self.row.entry.at

    @strawberry.field(
        description=(
            "COMMIT_OBSERVED (by polling, or the baseline: the commit the first deployment "
            "built), WEBHOOK_ACCEPTED, "
            "WEBHOOK_REJECTED or ROLLBACK_PINNED."
        )
    )
    def kind(self) -> str:
        return self.row.entry.kind

    @strawberry.field(description="False when the watcher rejected it (see reason).")
    def accepted(self) -> bool:
        return self.row.accepted

    @strawberry.field(description="Why: what the watcher made of it, or why it rejected it.")
    def reason(self) -> str:
        return self.row.entry.reason

    @strawberry.field(description="The commit seen, announced, or rolled back to.")
    def commit(self) -> str | None:
        return self.row.entry.commit

    @strawberry.field(description="How the watcher learnt of it: WATCH, WEBHOOK or ROLLBACK.")
    def trigger(self) -> Trigger | None:
        return self.row.entry.trigger

    @strawberry.field(description="The Git host's delivery id, for a webhook.")
    def delivery_id(self) -> str | None:
        return self.row.entry.delivery_id

    @strawberry.field(description="The Git host that sent the webhook (github, gitea, gitlab).")
    def provider(self) -> str | None:
        return self.row.entry.provider

    @strawberry.field
    def repo_url(self) -> str:
        return self.row.entry.repo_url

    @strawberry.field(description="The branch concerned (null: a push that was not to one).")
    def branch(self) -> str | None:
        return self.row.entry.branch

    @strawberry.field(description="The apps it concerns.")
    def apps(self) -> list[str]:
        return list(self.row.entry.apps)

    @strawberry.field(description="Its position in the watcher's log (entries sort by it).")
    def position(self) -> int:
        return self.row.position


@strawberry.type(description="An app: the stable name and route its deployments share.")
class App:
    record: strawberry.Private[AppRecord]
    view: strawberry.Private[View | None] = None
    """Where its deployments are listed from: the live read model, or a past state."""

    def shared_identity(self) -> object:
        """The record: one object for every subscriber of one update (see fanout)."""
        return self.record

    @strawberry.field
    def name(self) -> str:
        return self.record.name

    @strawberry.field
    def repo_url(self) -> str:
        return self.record.repo_url

    @strawberry.field
    def branch(self) -> str:
        return self.record.branch

    @strawberry.field(description="Whether a new commit on the branch is deployed.")
    def watching(self) -> bool:
        return self.record.watching

    @strawberry.field(description="The app's stable route, while a deployment serves it.")
    def url(self) -> str | None:
        return self.record.url

    @strawberry.field(description="The deployment serving the app (the latest RUNNING one).")
    def current(self) -> Deployment | None:
        return Deployment(record=self.record.current) if self.record.current else None

    @strawberry.field(description="The newest deployment, whatever its status.")
    def latest(self) -> Deployment | None:
        return Deployment(record=self.record.latest) if self.record.latest else None

    @strawberry.field(description="Its deployments, newest first.")
    def deployments(
        self, info: Info[Any, Any], first: int | None = DEFAULT_PAGE
    ) -> list[Deployment]:
        view = _view(info, self.view)
        records = view.deployments(app=self.record.name, first=_page(first))
        return [Deployment(record=r) for r in records]

    @strawberry.field(
        description=(
            "Why deployments were (or were not) triggered: the newest `limit` entries of the "
            "watcher's ledger about the app's branch, oldest first. The api keeps the newest "
            "SHIPWRECK_LEDGER_ENTRIES (1000) per (repository, branch)."
        )
    )
    def ledger(self, info: Info[Any, Any], limit: int | None = DEFAULT_PAGE) -> list[LedgerEntry]:
        # A past state shows the ledger as it was then.
        until = self.view.at if isinstance(self.view, readmodel.PlatformState) else None
        rows = _ctx(info).live.model.ledger.for_app(
            self.record.name,
            self.record.repo_url,
            self.record.branch,
            limit=_page(limit),
            until=until,
        )
        return [LedgerEntry(row=r) for r in rows]


@strawberry.type(description="A worker node, as its heartbeats and the scheduler describe it.")
class Node:
    row: strawberry.Private[NodeRow]
    view: strawberry.Private[View | None] = None

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.node_id))

    @strawberry.field
    def hostname(self) -> str:
        return self.row.hostname

    @strawberry.field
    def status(self) -> NodeStatus:
        return self.row.status

    @strawberry.field
    def cpu_count(self) -> int:
        return self.row.cpu_count

    @strawberry.field
    def mem_total_mb(self) -> int:
        return self.row.mem_total_mb

    @strawberry.field
    def mem_free_mb(self) -> int:
        return self.row.mem_free_mb

    @strawberry.field
    def load_avg(self) -> float:
        return self.row.load_avg

    @strawberry.field
    def last_seen_at(self) -> datetime:
        return self.row.last_seen_at

    @strawberry.field(description="The RUNNING deployments placed on this node.")
    def deployments(self, info: Info[Any, Any]) -> list[Deployment]:
        running = _view(info, self.view).running_on(self.row.node_id)
        return [Deployment(record=r) for r in running]


@strawberry.type(description="One line of a deployment's build, test or runtime output.")
class LogLine:
    line: strawberry.Private[_LogLine]

    def shared_identity(self) -> object:
        """The line: one object for every subscriber (see fanout)."""
        return self.line

    @strawberry.field
    def deployment_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.line.deployment_id))

    @strawberry.field(description="Placement attempt the line belongs to.")
    def attempt(self) -> int:
        return self.line.attempt

    @strawberry.field
    def stream(self) -> LogStream:
        return self.line.stream

    @strawberry.field(description="Order of the line within its attempt.")
    def sequence(self) -> int:
        return self.line.sequence

    @strawberry.field
    def at(self) -> datetime:
        return self.line.at

    @strawberry.field
    def text(self) -> str:
        return self.line.text


@strawberry.input(description="What to deploy.")
class DeployInput:
    repo_url: str
    branch: str = "main"
    watch: bool = strawberry.field(
        default=True, description="Redeploy automatically when the branch gets a new commit."
    )


@strawberry.type(description="Apps, deployments and nodes as they were at a moment.")
class PlatformState:
    state: strawberry.Private[readmodel.PlatformState]

    @strawberry.field(description="The moment: only events that had happened by then count.")
    def at(self) -> datetime:
        return self.state.at

    @strawberry.field(description="Every app of the time, by name.")
    def apps(self) -> list[App]:
        return [App(record=r, view=self.state) for r in self.state.apps()]

    @strawberry.field(description="One app as it was.")
    def app(self, name: str) -> App | None:
        record = self.state.app(name)
        return App(record=record, view=self.state) if record else None

    @strawberry.field(description="Deployments of the time, newest first, of one app or of all.")
    def deployments(
        self, app: str | None = strawberry.UNSET, first: int | None = DEFAULT_PAGE
    ) -> list[Deployment]:
        return [Deployment(record=r) for r in self.state.deployments(app or None, _page(first))]

    @strawberry.field(description="One deployment as it was (null if not requested yet).")
    def deployment(self, id: strawberry.ID) -> Deployment | None:
        record = self.state.deployment(_uuid(id))
        return Deployment(record=record) if record else None

    @strawberry.field(description="Every node that had sent a heartbeat, as it was.")
    def nodes(self) -> list[Node]:
        return [Node(row=row, view=self.state) for row in self.state.nodes()]


@strawberry.type(description="A deployment whose status differs between two moments.")
class DeploymentDiff:
    change: strawberry.Private[DeploymentChange]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.change.id))

    @strawberry.field
    def app(self) -> str | None:
        return self.change.app

    @strawberry.field(description="Its status at `from` (null: not requested yet).")
    def before(self) -> DeploymentStatus | None:
        return self.change.before

    @strawberry.field(description="Its status at `to` (null: not requested yet).")
    def after(self) -> DeploymentStatus | None:
        return self.change.after

    @strawberry.field(description="The deployment as it was at `to` (at `from` if gone then).")
    def deployment(self) -> Deployment:
        return Deployment(record=self.change.record)


@strawberry.type(description="An app whose current deployment differs between two moments.")
class AppCurrentDiff:
    change: strawberry.Private[CurrentChange]

    @strawberry.field
    def name(self) -> str:
        return self.change.app

    @strawberry.field(description="Its current deployment at `from`.")
    def before(self) -> Deployment | None:
        return Deployment(record=self.change.before) if self.change.before else None

    @strawberry.field(description="Its current deployment at `to`.")
    def after(self) -> Deployment | None:
        return Deployment(record=self.change.after) if self.change.after else None


@strawberry.type(description="What changed between two moments.")
class StateDiff:
    diff: strawberry.Private[readmodel.StateDiff]

    @strawberry.field(name="from")
    def from_(self) -> datetime:
        return self.diff.before.at

    @strawberry.field
    def to(self) -> datetime:
        return self.diff.after.at

    @strawberry.field(description="Deployments whose status changed, oldest request first.")
    def deployments(self) -> list[DeploymentDiff]:
        return [DeploymentDiff(change=c) for c in self.diff.deployments]

    @strawberry.field(description="Apps whose current deployment changed, by name.")
    def apps(self) -> list[AppCurrentDiff]:
        return [AppCurrentDiff(change=c) for c in self.diff.current]

    @strawberry.field(description="Apps that exist at `to` and did not at `from`.")
    def added_apps(self) -> list[str]:
        return list(self.diff.added_apps)

    @strawberry.field(description="Apps that existed at `from` and do not at `to`.")
    def removed_apps(self) -> list[str]:
        return list(self.diff.removed_apps)


@strawberry.type(description="How much the read model holds.")
class ReadModelCounts:
    deployments: int
    apps: int
    events: int = strawberry.field(description="The orchestrator's events folded.")
    ledger_entries: int = strawberry.field(description="The watcher's ledger entries kept.")

    @staticmethod
    def of(counts: Counts) -> ReadModelCounts:
        """The GraphQL view of counts."""
        return ReadModelCounts(
            deployments=counts.deployments,
            apps=counts.apps,
            events=counts.events,
            ledger_entries=counts.ledger_entries,
        )


@strawberry.type(description="Where the replay of one event store's log stands.")
class ReplayStatus:
    origin: str = strawberry.field(description="The event store replayed.")
    rebuilding: bool = strawberry.field(description="Whether the replay has not finished yet.")
    requested_at: datetime | None
    finished_at: datetime | None
    last_position: int | None = strawberry.field(description="Where the last replay ended.")

    @staticmethod
    def of(state: ReplayState) -> ReplayStatus:
        """The GraphQL view of a replay's state."""
        return ReplayStatus(
            origin=state.origin,
            rebuilding=state.rebuilding,
            requested_at=state.requested_at,
            finished_at=state.finished_at,
            last_position=state.last_position,
        )


@strawberry.type(
    description=(
        "The api's read model: rebuilt from the orchestrator's log (and the watcher's, for "
        "the trigger ledger)."
    )
)
class ReadModelStatus:
    rebuilding: bool = strawberry.field(description="Whether the replay has not finished yet.")
    origin: str = strawberry.field(description="The event store whose log it is folded from.")
    requested_at: datetime | None
    finished_at: datetime | None
    last_position: int | None = strawberry.field(description="Where the last replay ended.")
    counts: ReadModelCounts
    ledger: ReplayStatus = strawberry.field(
        description="The replay of the watcher's log, which holds the trigger ledger."
    )


@strawberry.type(description="What rebuildReadModel did.")
class RebuildResult:
    outcome: strawberry.Private[RebuildOutcome]

    @strawberry.field(description="Whether the replay finished before the timeout.")
    def complete(self) -> bool:
        return self.outcome.complete

    @strawberry.field(
        description=(
            "Whether the watcher's replay of the trigger ledger finished too (waited for "
            "only once the watcher has answered this api before)."
        )
    )
    def ledger_complete(self) -> bool:
        return self.outcome.ledger_complete

    @strawberry.field
    def requested_at(self) -> datetime:
        return self.outcome.requested_at

    @strawberry.field(description="When the orchestrator finished replaying (null: not yet).")
    def finished_at(self) -> datetime | None:
        return self.outcome.finished_at

    @strawberry.field(description="The last log position replayed.")
    def last_position(self) -> int | None:
        return self.outcome.last_position

    @strawberry.field(description="How long the rebuild took, in seconds.")
    def seconds(self) -> float:
        return self.outcome.seconds

    @strawberry.field(description="What the read model held before it was dropped.")
    def before(self) -> ReadModelCounts:
        return ReadModelCounts.of(self.outcome.before)

    @strawberry.field(description="What it holds now.")
    def after(self) -> ReadModelCounts:
        return ReadModelCounts.of(self.outcome.after)


# --- operations --------------------------------------------------------------------------------


@strawberry.type
class Query:
    """Questions answered from the api's read model.

    Those about apps and deployments wait (a while) for the read model to have folded the
    orchestrator's replay, and answer a REBUILDING error after that: before it, an app that
    exists could be answered as null and a list as short.
    """

    @strawberry.field(description="One deployment.")
    async def deployment(self, info: Info[Any, Any], id: strawberry.ID) -> Deployment | None:
        deployment_id = _uuid(id)
        record = (await _ctx(info).live.ready()).deployment(deployment_id)
        return Deployment(record=record) if record else None

    @strawberry.field(description="Deployments, newest first, of one app or of all.")
    async def deployments(
        self,
        info: Info[Any, Any],
        app: str | None = strawberry.UNSET,
        first: int | None = DEFAULT_PAGE,
    ) -> list[Deployment]:
        records = (await _ctx(info).live.ready()).deployments(app or None, _page(first))
        return [Deployment(record=r) for r in records]

    @strawberry.field(description="One app.")
    async def app(self, info: Info[Any, Any], name: str) -> App | None:
        record = (await _ctx(info).live.ready()).app(name)
        return App(record=record) if record else None

    @strawberry.field(description="Every app, by name.")
    async def apps(self, info: Info[Any, Any]) -> list[App]:
        return [App(record=r) for r in (await _ctx(info).live.ready()).apps()]

    @strawberry.field(description="Every node that has sent a heartbeat, by hostname.")
    def nodes(self, info: Info[Any, Any]) -> list[Node]:
        return [Node(row=row) for row in _ctx(info).live.model.nodes.all()]

    @strawberry.field(
        description=(
            "The platform as it was at `at`: folded from only the events that had happened "
            "by then. A time without an offset is UTC."
        )
    )
    async def state(self, info: Info[Any, Any], at: datetime) -> PlatformState:
        return PlatformState(state=(await _ctx(info).live.ready()).state_at(_aware(at)))

    @strawberry.field(description="What changed between two moments.")
    async def diff(
        self,
        info: Info[Any, Any],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> StateDiff:
        model = await _ctx(info).live.ready()
        before, after = model.state_at(_aware(from_)), model.state_at(_aware(to))
        return StateDiff(diff=diff_states(before, after))

    @strawberry.field(description="Where the read model stands and how much it holds.")
    def read_model(self, info: Info[Any, Any]) -> ReadModelStatus:
        live = _ctx(info).live
        replay = live.replay
        return ReadModelStatus(
            rebuilding=replay.rebuilding,
            origin=replay.origin,
            requested_at=replay.requested_at,
            finished_at=replay.finished_at,
            last_position=replay.last_position,
            counts=ReadModelCounts.of(live.model.counts()),
            ledger=ReplayStatus.of(live.ledger_replay),
        )


@strawberry.type
class Mutation:
    """Requests: each publishes one command to the orchestrator."""

    @strawberry.mutation(description="Deploy a repository branch; returns it REQUESTED.")
    async def deploy(self, info: Info[Any, Any], input: DeployInput) -> Deployment:
        ctx = _ctx(info)
        record = await ctx.actions.deploy(
            repo_url=input.repo_url, branch=input.branch, watch=input.watch, actor=ctx.actor
        )
        return Deployment(record=record)

    @strawberry.mutation(description="Deploy the head of a known app's branch again.")
    async def redeploy(self, info: Info[Any, Any], app: str) -> Deployment:
        ctx = _ctx(info)
        return Deployment(record=await ctx.actions.redeploy(app=app, actor=ctx.actor))

    @strawberry.mutation(description="Cancel a deployment that has not finished.")
    async def cancel_deployment(self, info: Info[Any, Any], id: strawberry.ID) -> Deployment:
        ctx = _ctx(info)
        record = await ctx.actions.cancel(deployment_id=_uuid(id), actor=ctx.actor)
        return Deployment(record=record)

    @strawberry.mutation(description="Deploy again the commit of an earlier deployment.")
    async def rollback(
        self, info: Info[Any, Any], app: str, deployment_id: strawberry.ID
    ) -> Deployment:
        ctx = _ctx(info)
        record = await ctx.actions.rollback(
            app=app, deployment_id=_uuid(deployment_id), actor=ctx.actor
        )
        return Deployment(record=record)

    @strawberry.mutation(description="Stop the app: its deployment stops, its route goes.")
    async def stop_app(self, info: Info[Any, Any], app: str) -> App:
        ctx = _ctx(info)
        return App(record=await ctx.actions.stop_app(app=app, actor=ctx.actor))

    @strawberry.mutation(description="Turn redeploy-on-new-commit on or off for an app.")
    async def set_app_watch(self, info: Info[Any, Any], app: str, watching: bool) -> App:
        ctx = _ctx(info)
        record = await ctx.actions.set_watch(app=app, watching=watching, actor=ctx.actor)
        return App(record=record)

    @strawberry.mutation(
        description=(
            "Drop the read model and rebuild it from replays of the orchestrator's log and "
            "the watcher's ledger; answers when they have finished, or after "
            "SHIPWRECK_REBUILD_TIMEOUT_SECONDS."
        )
    )
    async def rebuild_read_model(self, info: Info[Any, Any]) -> RebuildResult:
        ctx = _ctx(info)
        return RebuildResult(outcome=await ctx.actions.rebuild(actor=ctx.actor))


@strawberry.type
class Subscription:
    """Live views, over graphql-transport-ws."""

    @strawberry.subscription(
        description=(
            "The deployment now, then once per status change; ends when terminal. With "
            "`after` (a `sequence` already seen): each status change after it, then live ones."
        )
    )
    async def deployment_updates(
        self, info: Info[Any, Any], id: strawberry.ID, after: int | None = strawberry.UNSET
    ) -> AsyncGenerator[Deployment, None]:
        resume = None if after is strawberry.UNSET else after
        context = _ctx(info)
        sink = direct.sink(context.socket, _deployment)
        async for record in context.live.deployment_updates(_uuid(id), after=resume, sink=sink):
            yield Deployment(record=record)

    @strawberry.subscription(
        description=(
            "Build, test and runtime output: the lines so far, then live ones. With `after` "
            "(and `attempt`, default 1): only the lines after that line. Lines rotated out of "
            "the api's buffer are announced by a SYSTEM line saying how many."
        )
    )
    async def deployment_logs(
        self,
        info: Info[Any, Any],
        id: strawberry.ID,
        after: int | None = strawberry.UNSET,
        attempt: int | None = strawberry.UNSET,
    ) -> AsyncGenerator[LogLine, None]:
        resume = None if after is strawberry.UNSET else after
        of = None if attempt is strawberry.UNSET else attempt
        context = _ctx(info)
        sink = direct.sink(context.socket, _log_line)
        async for line in context.live.deployment_logs(
            _uuid(id), after=resume, attempt=of, sink=sink
        ):
            yield LogLine(line=line)

    @strawberry.subscription(
        description=(
            "The app now, then again each time one of its deployments changes status or its "
            "watch setting changes."
        )
    )
    async def app_updates(self, info: Info[Any, Any], name: str) -> AsyncGenerator[App, None]:
        context = _ctx(info)
        sink = direct.sink(context.socket, _app)
        async for record in context.live.app_updates(name, sink=sink):
            yield App(record=record)


# What each subscription yields, made from a record by a sink too (the same event payload).
def _deployment(record: DeploymentRecord) -> Deployment:
    return Deployment(record=record)


def _log_line(line: _LogLine) -> LogLine:
    return LogLine(line=line)


def _app(record: AppRecord) -> App:
    return App(record=record)


class ShipwreckSchema(strawberry.Schema):
    """The schema; client errors (:class:`ApiError`) are answered, not logged as faults."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only the errors that are not the client's doing."""
        faults = [e for e in errors if not isinstance(e.original_error, ApiError)]
        if faults:
            super().process_errors(faults, execution_context)


schema = ShipwreckSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    # One execution of each update for all the subscribers that selected the same fields.
    execution_context_class=SharedResultExecutor,
    # Thousands of clients send the same few documents: parse and validate each once
    # (a parsed subscription document is kept for as long as the subscription lives).
    # (the caches are module-level, shared by the extension objects made per operation).
    extensions=[partial(ParserCache, maxsize=256), partial(ValidationCache, maxsize=256)],
)
