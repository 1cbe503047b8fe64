"""Turning build, test and runtime output into numbered ``LogLine`` messages.

Docker hands output over in chunks that split lines anywhere (a build step's text and its
newline often come as two chunks), so each stream has its own buffer and only whole lines
are sent. Every line of a deployment attempt gets the next ``sequence`` number, across
streams, starting at 1; lines are published one at a time, in sequence order.

Numbers survive a restart of the node: a log reserves them in blocks (``reserve``, which
the node writes down, see ``logcursor``) before it uses them, and a log resumed after a
restart starts after the last reserved number. Readers drop a line whose number they have
seen, so numbering from 1 again would hide everything the app prints after the restart.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Final

from shipwreck_contracts import LogLine, LogStream
from shipwreck_contracts.base import Message

Send = Callable[[Message], Awaitable[None]]
"""Publishes one message (a report or a log line) and returns once the broker has it."""

Reserve = Callable[[int], Awaitable[None]]
"""Writes down that sequence numbers up to the given one may be used (before they are)."""

RESERVE_BLOCK: Final = 1000
"""Sequence numbers reserved at a time: one write per thousand lines."""

Clock = Callable[[], datetime]

MAX_LINE_CHARS: Final = 8192
"""Longer lines are cut: a minified bundle printed by a build is not worth a megabyte."""

TAIL_LINES: Final = 20
"""Lines of a stream kept to explain a failure."""

MIN_SECRET_CHARS: Final = 8
"""Environment values at least this long are redacted from output; shorter ones (``1``,
``true``, ``prod``) would blank out ordinary words."""

REDACTED: Final = "***"

# Colour and cursor escapes (npm, pip progress) are noise in a log viewer.
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def utc_now() -> datetime:
    """The current time, timezone-aware (messages refuse naive datetimes)."""
    return datetime.now(UTC)


class LineSplitter:
    """Reassembles lines from chunks of one stream."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, chunk: str) -> list[str]:
        """The lines completed by ``chunk`` (without their line endings)."""
        text = self._partial + chunk
        *lines, self._partial = re.split(r"\r?\n", text)
        return lines

    def flush(self) -> list[str]:
        """The unterminated last line, if any."""
        rest, self._partial = self._partial, ""
        return [rest] if rest else []


class DeploymentLog:
    """The log of one deployment attempt: numbered lines, secrets redacted, tails kept.

    ``after`` is the last number already used (a log resumed after a restart of the node);
    ``reserve`` is awaited before a number past the last reservation is used.
    """

    def __init__(
        self,
        send: Send,
        deployment_id: uuid.UUID,
        attempt: int,
        *,
        secrets: Iterable[str] = (),
        clock: Clock = utc_now,
        after: int = 0,
        reserve: Reserve | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.attempt = attempt
        self._send = send
        self._clock = clock
        self._sequence = after
        self._reserved = after
        self._reserve = reserve
        self._lock = asyncio.Lock()
        self._splitters: dict[LogStream, LineSplitter] = {}
        self._tails: dict[LogStream, deque[str]] = {}
        self._secrets: list[str] = []
        self.add_secrets(secrets)

    @property
    def sequence(self) -> int:
        """The sequence number of the last line sent (0 before the first)."""
        return self._sequence

    def add_secrets(self, values: Iterable[str]) -> None:
        """Redact these values from every later line (the app's environment values)."""
        fresh = {v for v in values if len(v) >= MIN_SECRET_CHARS} - set(self._secrets)
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted([*self._secrets, *fresh], key=len, reverse=True)

    async def write(self, stream: LogStream, chunk: str) -> None:
        """Send the whole lines ``chunk`` completes on ``stream``."""
        splitter = self._splitters.setdefault(stream, LineSplitter())
        await self._emit(stream, splitter.feed(chunk))

    async def flush(self, stream: LogStream) -> None:
        """Send the unterminated last line of ``stream`` (when that stream has ended)."""
        splitter = self._splitters.get(stream)
        if splitter is not None:
            await self._emit(stream, splitter.flush())

    async def line(self, stream: LogStream, text: str) -> None:
        """Send one line (a node message on ``SYSTEM``, typically); newlines split it."""
        await self._emit(stream, text.splitlines() or [""])

    def redact(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def tail(self, stream: LogStream, lines: int = TAIL_LINES) -> list[str]:
        """The last ``lines`` lines sent on ``stream`` (redacted, as sent)."""
        kept = self._tails.get(stream, ())
        return list(kept)[-lines:]

    async def _emit(self, stream: LogStream, lines: Iterable[str]) -> None:
        for raw in lines:
            text = self._clean(raw)
            if not text.strip():
                continue
            async with self._lock:
                self._sequence += 1
                if self._reserve is not None and self._sequence > self._reserved:
                    self._reserved = self._sequence + RESERVE_BLOCK - 1
                    await self._reserve(self._reserved)
                self._tails.setdefault(stream, deque(maxlen=TAIL_LINES)).append(text)
                await self._send(
                    LogLine(
                        deployment_id=self.deployment_id,
                        attempt=self.attempt,
                        stream=stream,
                        sequence=self._sequence,
                        text=text,
                        at=self._clock(),
                    )
                )

    def _clean(self, raw: str) -> str:
        text = _ANSI.sub("", raw).rstrip()
        # A progress bar redraws itself with carriage returns: keep what is left on screen.
        text = self.redact(text.rsplit("\r", 1)[-1])
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [...]"
        return text
