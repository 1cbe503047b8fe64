"""Thin handlers: decode one message, call one service method (in a thread), done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from eventsourcing.persistence import Tracking
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import (
    CancelDeployment,
    NodeLost,
    NodeRegistered,
    NodeReturned,
    PlacementDecided,
    PlacementFailed,
    ReplayRequested,
    RepoChanged,
    RequestDeployment,
    RollbackApp,
    SetAppWatch,
    StageReported,
    StopApp,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
)
from shipwreck_contracts.base import Message
from shipwreck_eventstore import OutboxRelay, tracking_from_headers
from shipwreck_messaging import events_exchange, message_headers, tag_filter
from shipwreck_messaging.routes import ORCHESTRATOR_COMMANDS, ORCHESTRATOR_REPORTS
from shipwreck_orchestrator.service import OrchestratorService

M = TypeVar("M", bound=Message)


def register(broker: RabbitBroker, service: OrchestratorService, relay: OutboxRelay) -> None:
    """Subscribe the orchestrator's handlers on its two queues."""
    commands = broker.subscriber(ORCHESTRATOR_COMMANDS.declaration(), events_exchange())
    reports = broker.subscriber(ORCHESTRATOR_REPORTS.declaration(), events_exchange())

    def on(subscriber: Any, cls: type[M], method: Callable[[M, Tracking | None], bool]) -> None:
        async def handle(msg: Any, headers: dict[str, Any] = message_headers(broker)) -> None:
            await anyio.to_thread.run_sync(method, msg, tracking_from_headers(headers))

        # FastStream decodes by the annotation: give each handler its own message type.
        handle.__annotations__["msg"] = cls
        handle.__name__ = f"on_{cls.__name__}"
        subscriber(filter=tag_filter(cls))(handle)

    on(commands, RequestDeployment, service.request_deployment)
    on(commands, CancelDeployment, service.cancel)
    on(commands, RollbackApp, service.rollback)
    on(commands, StopApp, service.stop_app)
    on(commands, SetAppWatch, service.set_watch)
    on(commands, RepoChanged, service.repo_changed)
    on(reports, StageReported, service.stage_reported)
    on(reports, WorkSucceeded, service.work_succeeded)
    on(reports, WorkFailed, service.work_failed)
    on(reports, PlacementDecided, service.placement_decided)
    on(reports, PlacementFailed, service.placement_failed)
    on(reports, WorkLost, service.work_lost)
    on(reports, NodeRegistered, service.node_registered)
    on(reports, NodeReturned, service.node_returned)

    @reports(filter=tag_filter(NodeLost))
    async def on_node_lost(msg: NodeLost) -> None:
        await anyio.to_thread.run_sync(service.node_lost, msg, None)

    @commands(filter=tag_filter(ReplayRequested))
    async def on_replay(msg: ReplayRequested) -> None:
        if msg.origin == relay.app.name:
            await relay.replay(msg.reply_to, msg.after_position)
