"""Log lines of a deployment: build, test and runtime output."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from .base import Message
from .enums import LogStream
from .values import Attempt, AwareDatetime


class LogLine(Message, tag="deployment.log.v1", frozen=True, kw_only=True):
    """One line of output of a deployment.

    ``sequence`` increases by one per line of a deployment attempt, across streams, so a
    consumer can order lines and drop a redelivered one by ``(attempt, sequence)``; a
    rescheduled attempt runs on another node, which counts from 0 again. Secrets are redacted
    by the node before sending.
    """

    deployment_id: uuid.UUID
    attempt: Attempt = 1
    stream: LogStream
    sequence: Annotated[int, msgspec.Meta(ge=0)]
    text: str
    at: AwareDatetime
