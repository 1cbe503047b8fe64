"""Constrained value types shared by the messages and the manifest.

The constraints live in ``Annotated[..., msgspec.Meta(...)]`` so they are checked whenever a
message is decoded (``msgspec`` does not check them on ``__init__``) and they show up in the
generated JSON Schemas. A value that breaks one is rejected at the boundary, by the consumer
that decodes it, with an error naming the field.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

import msgspec

#: An app name is used as a DNS label (``<app>.<apps domain>``), a container name part and a
#: queue-friendly key, so it is held to RFC 1123 label rules, lowercase only.
APP_NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
APP_NAME_RE: Final = re.compile(APP_NAME_PATTERN)
APP_NAME_RULE: Final = (
    "1 to 63 characters of lowercase a-z, 0-9 and '-', not starting or ending with '-'"
)

#: A full commit object name: SHA-1 (40 hex digits) or SHA-256 (64). Abbreviated names are
#: not accepted because they are ambiguous over time and cannot be resolved by ls-remote.
COMMIT_SHA_PATTERN: Final = r"^([0-9a-f]{40}|[0-9a-f]{64})$"

AwareDatetime = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="An RFC 3339 timestamp with a UTC offset."),
]
"""A timezone-aware timestamp; a naive one is rejected when decoded."""

AppName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=63,
        pattern=APP_NAME_PATTERN,
        description="An app name: a lowercase DNS label (a-z, 0-9, '-').",
    ),
]
"""The name of an app: a lowercase RFC 1123 DNS label."""

CommitSha = Annotated[
    str,
    msgspec.Meta(
        pattern=COMMIT_SHA_PATTERN,
        description="A full lowercase hex commit id (SHA-1 or SHA-256).",
    ),
]
"""A full, lowercase, hexadecimal commit id."""

RepoUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        description="A Git remote URL (https://, ssh://, git:// or scp-like).",
    ),
]
"""A Git remote URL as given by the user. It must never carry credentials in clear."""

BranchName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=255, description="A Git branch name, e.g. main."),
]
"""A branch name (without ``refs/heads/``)."""

Actor = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        description="Who caused this: a user or token name, or system:<service>.",
    ),
]
"""Who asked for something: a user or token name, or ``system:<service>`` for automation."""

Attempt = Annotated[
    int,
    msgspec.Meta(ge=1, description="Placement attempt of a deployment, from 1."),
]
"""The placement attempt (epoch) of a deployment. Reports from an older attempt are stale."""

Megabytes = Annotated[int, msgspec.Meta(ge=0, description="A size in MiB.")]
"""A non-negative size in mebibytes."""
