"""An open-loop HTTP load generator: GET requests at fixed times, whatever the answers do.

Request ``i`` is due at ``start + i / rate``. It is sent on one of a few keep-alive
connections (taken in turn) or, when all are busy, on a new one: a slow answer never delays
the requests behind it, so a stall shows as latency and failures instead of as a lower rate
(no coordinated omission). Latency is measured from the due time, not from the send.

Run it in a process of its own, so that the code under test never delays the schedule::

    python -m tests.support.loadgen --port 8080 --host app.localhost:8080 --rate 200 --out r.json

It prints ``ready`` once its connections are open, runs until SIGTERM or SIGINT, lets the
requests in flight finish (or time out), then writes to ``--out`` as JSON
``{"requests": [...], "connections_opened": n}``, each request as
``[due, sent, done, status, kind, body, retried]`` with monotonic times in seconds
(comparable with ``time.monotonic()`` in other processes), ``status`` 0 when there was no
answer, ``kind`` saying what went wrong (``""`` for a 200), and ``retried`` what ended the
reused connection of a first try (``""`` when there was none).

Like browsers, curl and Go's client (RFC 9112 section 9.3.1), a GET sent on a reused
keep-alive connection that ends before any byte of an answer is sent once more on a new
connection: a server may close an idle connection at any moment (Caddy closes them all when
it applies a config), and a request already on its way then meets the close. The retry is
recorded, so a report can say what a client without it would have seen.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import select
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

Record = tuple[float, float, float, int, str, str, str]


class NoAnswer(Exception):
    """The connection ended before a whole answer arrived."""


class ClosedBeforeAnswer(Exception):
    """The connection ended, or was reset, before the first byte of an answer."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.kind = type(cause).__name__


@dataclass
class Connection:
    """One HTTP/1.1 keep-alive connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: int = 0

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; the status, the body and whether the connection stays open."""
        self.used += 1
        try:
            self.writer.write(request)
            await self.writer.drain()
            line = await self.reader.readline()
            if not line:
                raise NoAnswer("closed before a status line")
        except (NoAnswer, ConnectionError) as e:
            raise ClosedBeforeAnswer(e) from e
        status = int(line.split(b" ", 2)[1])
        length: int | None = None
        chunked = False
        keep = True
        while (header := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                keep = False
        if chunked:
            body = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]  # data, then CRLF
            await self.reader.readline()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body = await self.reader.read()
            keep = False
        return status, body, keep

    def closed(self) -> bool:
        """Whether the server has closed (or reset) this idle connection.

        Asks the socket itself, as urllib3 does: an idle connection that is readable holds a
        FIN, a reset or bytes nobody asked for, and this event loop may not have read them
        yet.
        """
        if self.reader.at_eof() or self.writer.is_closing():
            return True
        sock = self.writer.get_extra_info("socket")
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Generator:
    """Sends the requests on a pool of connections and records each one."""

    port: int
    host: str
    rate: float
    connections: int
    timeout: float
    records: list[Record] = field(default_factory=list)
    idle: collections.deque[Connection] = field(default_factory=collections.deque)
    opened: int = 0

    @property
    def request(self) -> bytes:
        return (
            f"GET / HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: shipwreck-loadgen\r\n\r\n".encode()
        )

    async def connect(self) -> Connection:
        self.opened += 1
        return await Connection.open(self.port)

    async def open(self) -> None:
        for _ in range(self.connections):
            self.idle.append(await self.connect())

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        start = loop.time() + 0.05
        i = 0
        while not stop.is_set():
            due = start + i / self.rate
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            i += 1
        if in_flight:
            await asyncio.wait(in_flight)
        for connection in self.idle:
            connection.close()

    def _take_idle(self) -> Connection | None:
        # In turn (oldest idle first), so every connection stays in use. Like any careful
        # client, never reuse one the server has already closed (its FIN has arrived).
        while self.idle:
            connection = self.idle.popleft()
            if not connection.closed():
                return connection
            connection.close()
        return None

    async def one(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        connection = self._take_idle()
        sent = loop.time()
        status, kind, body, retried = 0, "", b"", ""
        try:
            async with asyncio.timeout(self.timeout):
                if connection is None:
                    connection = await self.connect()
                try:
                    status, body, keep = await connection.get(self.request)
                except ClosedBeforeAnswer as e:
                    if connection.used == 1:
                        raise  # a new connection: nothing to retry
                    retried = f"{e.kind} on a reused connection"
                    connection.close()
                    connection = await self.connect()
                    status, body, keep = await connection.get(self.request)
            kind = "" if status == 200 else f"http {status}"
        except TimeoutError:
            kind, keep = "timeout", False
        except (
            ClosedBeforeAnswer,
            NoAnswer,
            asyncio.IncompleteReadError,
            ConnectionError,
            OSError,
        ) as e:
            # Told apart: a connection that was reused (a keep-alive the proxy closed) or new.
            reused = connection is not None and connection.used > 1
            name = e.kind if isinstance(e, ClosedBeforeAnswer) else type(e).__name__
            kind = f"{name}{' on a reused connection' if reused else ''}"
            keep = False
        done = loop.time()
        if connection is not None:
            if keep:
                self.idle.append(connection)
            else:
                connection.close()
        self.records.append((due, sent, done, status, kind, body.decode(errors="replace"), retried))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the proxy's port on 127.0.0.1")
    parser.add_argument("--host", required=True, help="the Host header (the app's host name)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for an answer")
    parser.add_argument("--out", type=Path, required=True, help="where the records go (JSON)")
    args = parser.parse_args(argv)
    generator = Generator(args.port, args.host, args.rate, args.connections, args.timeout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await generator.open()
        print("ready", flush=True)
        await generator.run(stop)

    asyncio.run(run())
    args.out.write_text(
        json.dumps({"requests": generator.records, "connections_opened": generator.opened})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
