"""The catalogue of every integration message: one union, one tuple, one lookup by tag."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

import msgspec

from .apps import AppWatchChanged, RollbackApp, SetAppWatch, StopApp
from .base import Message, tag_of
from .deployments import (
    CancelDeployment,
    DeploymentCancelled,
    DeploymentCancelRefused,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStopped,
    DeploymentSuperseded,
    RequestDeployment,
)
from .logs import LogLine
from .nodes import (
    CancelWork,
    DeployWork,
    DrainNode,
    NodeAssignment,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeReturned,
    SchedulerProbe,
    StageReported,
    StopWork,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
)
from .placement import PlacementDecided, PlacementFailed, RequestPlacement
from .projections import ReplayFinished, ReplayRequested
from .repos import LedgerEntryRecorded, RepoChanged, WebhookReceived

AnyMessage: TypeAlias = (
    # commands
    RequestDeployment
    | CancelDeployment
    | RollbackApp
    | StopApp
    | SetAppWatch
    | RequestPlacement
    | DeployWork
    | CancelWork
    | StopWork
    | DrainNode
    | NodeAssignment
    | ReplayRequested
    # events
    | DeploymentRequested
    | DeploymentInitialized
    | DeploymentScheduled
    | DeploymentProgressed
    | DeploymentRunning
    | DeploymentErrored
    | DeploymentCancelled
    | DeploymentCancelRefused
    | DeploymentSuperseded
    | DeploymentStopped
    | AppWatchChanged
    | PlacementDecided
    | PlacementFailed
    | StageReported
    | WorkSucceeded
    | WorkFailed
    | WorkLost
    | NodeRegistered
    | NodeHeartbeat
    | NodeDrained
    | NodeLost
    | NodeReturned
    | SchedulerProbe
    | RepoChanged
    | WebhookReceived
    | LedgerEntryRecorded
    | LogLine
    | ReplayFinished
)
"""A tagged union of every integration message; msgspec picks the class by ``type``."""

# Derived from the union so that the two can never disagree.
ALL_MESSAGES: Final[tuple[type[Message], ...]] = typing.get_args(AnyMessage)
"""Every concrete message class, in a stable order."""

MESSAGES_BY_TAG: Final[Mapping[str, type[Message]]] = MappingProxyType(
    {tag_of(cls): cls for cls in ALL_MESSAGES}
)
"""Every concrete message class by its tag (which is also its routing key)."""

_any_message_decoder: Final[msgspec.json.Decoder[AnyMessage]] = msgspec.json.Decoder(AnyMessage)


def message_class(tag: str) -> type[Message]:
    """Return the message class for ``tag``; raise KeyError naming the unknown tag."""
    try:
        return MESSAGES_BY_TAG[tag]
    except KeyError:
        raise KeyError(f"no message has the tag {tag!r}") from None


def decode_message(data: bytes | str) -> AnyMessage:
    """Decode any integration message from JSON, choosing its class by its tag.

    Raises ``msgspec.ValidationError`` (naming the field) for an invalid or unknown message
    and ``msgspec.DecodeError`` for bytes that are not JSON.
    """
    return _any_message_decoder.decode(data)
