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
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext, Info

from shipwreck_api.commands import Actions
from shipwreck_api.errors import ApiError, Refused
from shipwreck_api.live import Live
from shipwreck_api.readmodel import (
    AppRecord,
    DeploymentRecord,
    EventEntry,
    HistoryEntry,
    NodeRow,
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


@strawberry.type(description="An app: the stable name and route its deployments share.")
class App:
    record: strawberry.Private[AppRecord]

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
        records = _ctx(info).live.model.deployments(app=self.record.name, first=_page(first))
        return [Deployment(record=r) for r in records]


@strawberry.type(description="A worker node, as its heartbeats and the scheduler describe it.")
class Node:
    row: strawberry.Private[NodeRow]

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
        return [Deployment(record=r) for r in _ctx(info).live.model.running_on(self.row.node_id)]


@strawberry.type(description="One line of a deployment's build, test or runtime output.")
class LogLine:
    line: strawberry.Private[_LogLine]

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


# --- operations --------------------------------------------------------------------------------


@strawberry.type
class Query:
    """Questions answered from the api's read model."""

    @strawberry.field(description="One deployment.")
    def deployment(self, info: Info[Any, Any], id: strawberry.ID) -> Deployment | None:
        record = _ctx(info).live.model.deployment(_uuid(id))
        return Deployment(record=record) if record else None

    @strawberry.field(description="Deployments, newest first, of one app or of all.")
    def deployments(
        self,
        info: Info[Any, Any],
        app: str | None = strawberry.UNSET,
        first: int | None = DEFAULT_PAGE,
    ) -> list[Deployment]:
        records = _ctx(info).live.model.deployments(app or None, _page(first))
        return [Deployment(record=r) for r in records]

    @strawberry.field(description="One app.")
    def app(self, info: Info[Any, Any], name: str) -> App | None:
        record = _ctx(info).live.model.app(name)
        return App(record=record) if record else None

    @strawberry.field(description="Every app, by name.")
    def apps(self, info: Info[Any, Any]) -> list[App]:
        return [App(record=r) for r in _ctx(info).live.model.apps()]

    @strawberry.field(description="Every node that has sent a heartbeat, by hostname.")
    def nodes(self, info: Info[Any, Any]) -> list[Node]:
        return [Node(row=row) for row in _ctx(info).live.model.nodes.all()]


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


@strawberry.type
class Subscription:
    """Live views, over graphql-transport-ws."""

    @strawberry.subscription(
        description="The deployment now, then once per status change; ends when terminal."
    )
    async def deployment_updates(
        self, info: Info[Any, Any], id: strawberry.ID
    ) -> AsyncGenerator[Deployment, None]:
        async for record in _ctx(info).live.deployment_updates(_uuid(id)):
            yield Deployment(record=record)

    @strawberry.subscription(
        description="Build, test and runtime output: the lines so far, then live ones."
    )
    async def deployment_logs(
        self, info: Info[Any, Any], id: strawberry.ID
    ) -> AsyncGenerator[LogLine, None]:
        async for line in _ctx(info).live.deployment_logs(_uuid(id)):
            yield LogLine(line=line)


class ShipwreckSchema(strawberry.Schema):
    """The schema; client errors (:class:`ApiError`) are answered, not logged as faults."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only the errors that are not the client's doing."""
        faults = [e for e in errors if not isinstance(e.original_error, ApiError)]
        if faults:
            super().process_errors(faults, execution_context)


schema = ShipwreckSchema(query=Query, mutation=Mutation, subscription=Subscription)
