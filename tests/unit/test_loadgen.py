"""The benchmarks' load generator: how it treats keep-alive connections a server closes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tests.support.loadgen import Connection, Generator

pytestmark = pytest.mark.anyio

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# How a test server treats the n-th request (1-based) on one connection: answer it, or close
# the connection without a byte of answer (a server shutting down its idle connections at
# the moment the request arrives).
Policy = Callable[[int], bool]


@asynccontextmanager
async def server(answers: Policy) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                n += 1
                if not answers(n):
                    return
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()


def generator(port: int) -> Generator:
    return Generator(port, "app.localhost", rate=100.0, connections=1, timeout=5.0)


async def test_a_get_on_a_reused_connection_closed_before_an_answer_is_sent_again() -> None:
    # Every connection answers its first request only: each reuse meets a close.
    async with server(lambda n: n == 1) as port:
        load = generator(port)
        await load.open()
        for i in range(4):
            await load.one(float(i))
        for connection in load.idle:
            connection.close()

    assert [(r[3], r[4], r[5]) for r in load.records] == [(200, "", "ok")] * 4
    retried = [r[6] for r in load.records]
    assert retried[0] == ""  # the first request used a fresh connection
    assert retried[1:] == ["NoAnswer on a reused connection"] * 3
    assert load.opened == 4  # the first connection, then one per retry


async def test_a_new_connection_closed_before_an_answer_is_a_failure_not_retried() -> None:
    async with server(lambda n: False) as port:
        load = generator(port)
        await load.one(0.0)  # no idle connection: it opens one

    ((_, _, _, status, kind, body, retried),) = load.records
    assert (status, kind, body, retried) == (0, "NoAnswer", "", "")
    assert load.opened == 1


async def test_a_reused_connection_that_fails_again_after_the_retry_is_recorded_as_failed() -> None:
    # Answers nothing after the very first request: the retry's new connection fails too.
    answered = 0

    def once(n: int) -> bool:
        nonlocal answered
        answered += 1
        return answered == 1

    async with server(once) as port:
        load = generator(port)
        await load.open()
        await load.one(0.0)
        await load.one(1.0)

    assert [(r[3], r[4], r[6]) for r in load.records] == [
        (200, "", ""),
        (0, "NoAnswer", "NoAnswer on a reused connection"),
    ]


async def test_an_idle_connection_the_server_closed_is_seen_before_the_loop_reads_the_fin() -> None:
    # A server in a thread: it answers one request, then closes when told, while this
    # test's event loop is blocked and cannot read the FIN.
    listener = socket.create_server(("127.0.0.1", 0))
    close_now = threading.Event()

    def serve() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.recv(4096)
            peer.sendall(ANSWER)
            close_now.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        connection = await Connection.open(listener.getsockname()[1])
        assert await connection.get(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == (200, b"ok", True)
        assert not connection.closed()
        close_now.set()
        thread.join(5)
        # Blocks the loop on purpose: the FIN arrives, and the loop reads nothing meanwhile.
        time.sleep(0.1)  # noqa: ASYNC251
        assert not connection.reader.at_eof()
        assert connection.closed()
        connection.close()
    finally:
        listener.close()
