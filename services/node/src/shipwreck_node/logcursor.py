"""Where each deployment's log got to, kept on the node's disk across its restarts.

The node has no store, but a restarted node that follows its apps' output again must number
the new lines after the ones it sent before (readers drop a number they have seen) and
should not send the app's whole output again. So each deployment this node logs for has a
small JSON file, ``<SHIPWRECK_WORK_DIR>/logs/<node id>/<deployment id>.json``, with:

- the highest sequence number that may have been used (numbers are reserved in blocks
  before use, so after a crash the next line skips at most one block, never reuses one);
- until when the app's output was followed: a clean stop records the moment it stopped
  following, a crash leaves the time of the last reservation (lines after it may show
  twice, under new numbers; none is lost).

The files are read once when the node starts, then kept in memory; a deployment's file is
removed when the deployment ends here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio.to_thread
import msgspec

log = logging.getLogger(__name__)


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """How far one deployment attempt's log got."""

    attempt: int
    sequence: int
    """Every number up to this one may have been used."""
    followed_until: datetime | None = None
    """The app's output up to this moment was sent (None: none was followed yet)."""


@dataclass
class LogCursors:
    """The cursors of one node's deployments: on disk, and in memory once `load` ran."""

    directory: Path

    def __post_init__(self) -> None:
        self._cursors: dict[uuid.UUID, Cursor] = {}

    def load(self) -> None:
        """Read every cursor file (blocking: run it in a thread, once, at start-up).

        An unreadable file is skipped: that deployment's log numbers from 0 again.
        """
        self._cursors.clear()
        if not self.directory.is_dir():
            return
        for path in self.directory.glob("*.json"):
            try:
                deployment_id = uuid.UUID(path.stem)
                self._cursors[deployment_id] = msgspec.json.decode(path.read_bytes(), type=Cursor)
            except (ValueError, OSError, msgspec.DecodeError) as e:
                log.warning("ignoring the log cursor %s: %s", path, e)

    def get(self, deployment_id: uuid.UUID, attempt: int) -> Cursor | None:
        """The cursor of that deployment attempt, if its log was written to before."""
        cursor = self._cursors.get(deployment_id)
        return cursor if cursor is not None and cursor.attempt == attempt else None

    def latest(self, deployment_id: uuid.UUID) -> Cursor | None:
        """The cursor of the deployment's latest attempt logged here, if any."""
        return self._cursors.get(deployment_id)

    def known(self) -> set[uuid.UUID]:
        """The deployments that have a cursor."""
        return set(self._cursors)

    async def save(self, deployment_id: uuid.UUID, cursor: Cursor) -> None:
        """Write the cursor (atomically: a crash leaves the old file or the new one)."""
        self._cursors[deployment_id] = cursor
        path = self.directory / f"{deployment_id}.json"
        data = msgspec.json.encode(cursor)

        def write() -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".tmp")
            partial.write_bytes(data)
            os.replace(partial, path)

        await anyio.to_thread.run_sync(write)

    async def drop(self, deployment_id: uuid.UUID) -> None:
        """Forget the deployment's cursor (it ended here)."""
        if self._cursors.pop(deployment_id, None) is None:
            return
        path = self.directory / f"{deployment_id}.json"

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

        await anyio.to_thread.run_sync(remove)
