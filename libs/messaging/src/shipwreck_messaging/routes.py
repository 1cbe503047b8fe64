"""The platform's queues and the message tags each one receives (one table, every service).

Every service declares the whole table at start-up, so a command or report published
while its consumer is down waits in a durable quorum queue instead of being unroutable.
Each queue is bound only to the tags its service handles: a bound tag without a handler
would be retried and then dead-lettered.
"""

from __future__ import annotations

from shipwreck_contracts import (
    AppWatchChanged,
    CancelDeployment,
    DeploymentCancelled,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRunning,
    DeploymentStopped,
    DeploymentSuperseded,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeReturned,
    PlacementDecided,
    PlacementFailed,
    ReplayRequested,
    RepoChanged,
    RequestDeployment,
    RequestPlacement,
    RollbackApp,
    SchedulerProbe,
    SetAppWatch,
    StageReported,
    StopApp,
    WebhookReceived,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
    tag_of,
)
from shipwreck_contracts.base import Message
from shipwreck_messaging.topology import Topology

TOPOLOGY = Topology()


def _tags(*classes: type[Message]) -> list[str]:
    return [tag_of(c) for c in classes]


ORCHESTRATOR_COMMANDS = TOPOLOGY.add(
    "orchestrator.commands",
    _tags(
        RequestDeployment,
        RollbackApp,
        CancelDeployment,
        StopApp,
        SetAppWatch,
        ReplayRequested,
        RepoChanged,
    ),
)
"""What users (through the api) ask of the orchestrator, and replay requests of readers."""

ORCHESTRATOR_REPORTS = TOPOLOGY.add(
    "orchestrator.reports",
    _tags(
        StageReported,
        WorkSucceeded,
        WorkFailed,
        WorkLost,
        PlacementDecided,
        PlacementFailed,
        NodeLost,
        NodeRegistered,
        NodeReturned,
    ),
)
"""What nodes and the scheduler tell the orchestrator (a node that registers or returns
gets its assignment)."""

SCHEDULER_NODES = TOPOLOGY.add(
    "scheduler.nodes", _tags(NodeRegistered, NodeHeartbeat, SchedulerProbe)
)
"""Node registrations and heartbeats: the scheduler's view of which nodes are alive."""

SCHEDULER_PLACEMENT = TOPOLOGY.add(
    "scheduler.placement",
    _tags(
        RequestPlacement,
        DeploymentRunning,
        DeploymentErrored,
        DeploymentCancelled,
        DeploymentStopped,
        DeploymentSuperseded,
    ),
)
"""Placement requests, and the outcomes that release a node's reservation."""

ROLLBACK_INITIALIZED = f"{tag_of(DeploymentInitialized)}.rollback"
"""The routing key of a second copy of a rollback's ``deployment.initialized``: for the
watcher, which pins the rolled-back app and has nothing to do with any other deployment's
(it took one delivery through its quorum queue, and a handler call, per deployment)."""

WATCHER_APPS = TOPOLOGY.add(
    "watcher.apps",
    [
        *_tags(AppWatchChanged, WebhookReceived),
        ROLLBACK_INITIALIZED,
        *_tags(DeploymentProgressed, ReplayRequested),
    ],
    retired=_tags(DeploymentInitialized),
)
"""Which apps watch which (repository, branch), webhooks the api received, rollbacks (each
pins its app in the ledger), build reports (the commit the first deployment builds is the
baseline of its branch), and replay requests for the ledger."""
