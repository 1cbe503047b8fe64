"""Enumerations carried by messages.

Values are the upper-case names DESIGN.md uses (``RUNNING``, ``WEBHOOK``), so the JSON, the
GraphQL enums and the documents all spell them the same way. New members may be added;
renaming or removing one is a breaking change and needs new message tags.
"""

from __future__ import annotations

import enum
from typing import Final


class Trigger(enum.StrEnum):
    """What started a deployment."""

    MANUAL = "MANUAL"
    WATCH = "WATCH"
    WEBHOOK = "WEBHOOK"
    ROLLBACK = "ROLLBACK"


class DeploymentStatus(enum.StrEnum):
    """The lifecycle status of a deployment (DESIGN.md section 5)."""

    REQUESTED = "REQUESTED"
    INITIALIZED = "INITIALIZED"
    SCHEDULED = "SCHEDULED"
    CLONING = "CLONING"
    BUILDING = "BUILDING"
    TESTING = "TESTING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUPERSEDED = "SUPERSEDED"
    STOPPED = "STOPPED"
    ERRORED = "ERRORED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Whether no further status can follow this one."""
        return self in TERMINAL_STATUSES


class Stage(enum.StrEnum):
    """A stage a node works through; each value is also a `DeploymentStatus` value."""

    CLONING = "CLONING"
    BUILDING = "BUILDING"
    TESTING = "TESTING"
    STARTING = "STARTING"

    @property
    def status(self) -> DeploymentStatus:
        """The deployment status a deployment is in while a node is at this stage."""
        return DeploymentStatus(self.value)


class LogStream(enum.StrEnum):
    """Where a log line came from."""

    BUILD = "BUILD"
    TEST = "TEST"
    STDOUT = "STDOUT"
    STDERR = "STDERR"
    SYSTEM = "SYSTEM"


class NodeStatus(enum.StrEnum):
    """The status of a worker node as the scheduler sees it."""

    READY = "READY"
    DRAINED = "DRAINED"
    LOST = "LOST"


TERMINAL_STATUSES: Final = frozenset(
    {
        DeploymentStatus.SUPERSEDED,
        DeploymentStatus.STOPPED,
        DeploymentStatus.ERRORED,
        DeploymentStatus.CANCELLED,
    }
)
"""Statuses a deployment never leaves."""

IN_PROGRESS_STATUSES: Final = frozenset(
    {
        DeploymentStatus.REQUESTED,
        DeploymentStatus.INITIALIZED,
        DeploymentStatus.SCHEDULED,
        DeploymentStatus.CLONING,
        DeploymentStatus.BUILDING,
        DeploymentStatus.TESTING,
        DeploymentStatus.STARTING,
    }
)
"""Statuses on the way to RUNNING: each must hold a live lease and has a timeout."""
