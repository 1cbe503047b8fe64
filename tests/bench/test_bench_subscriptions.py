"""Subscription fan-out and time travel (`just bench tests/bench/test_bench_subscriptions.py -s`).

1. Fan-out: one api process (``python -m shipwreck_api``, its own core), 5,000 websocket
   subscribers to one deployment's ``deploymentUpdates`` in a second process (the other
   core). The benchmark publishes status changes as the orchestrator's relay would and
   measures, for every subscriber and every change, the time from just before the publish
   to the moment the update's bytes reached the subscriber's socket, as the kernel stamps
   each read (SO_TIMESTAMPNS); and the api's resident memory per idle subscriber. The
   clients are a minimal websocket implementation on raw sockets. Also reported: the time
   until the client process read the bytes, which adds the wait of each socket while one
   process reads 5,000 in turn (5,000 subscribers on 5,000 machines would not wait).
   Beside it, the floor: the same number of sockets and the same client, and a server that
   does nothing but write one pre-encoded frame to each socket in one loop (what the api's
   publish comes down to for a caught-up subscriber): how long that loop takes, and how
   much of it is the kernel's.
2. Time travel: ``state(at)`` over a read model of 1,000,000 stored events, generated in
   memory and applied to the read model directly.

Each benchmark prints one JSON line and appends it to .benchmarks/subscriptions.jsonl;
docs/BENCHMARKS.md records the figures. Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import aio_pika
import httpx
import pytest

from shipwreck_api.readmodel import ReadModel, state_at
from shipwreck_api.schema import ApiContext, schema
from shipwreck_contracts import (
    ORCHESTRATOR_ORIGIN,
    AppWatchChanged,
    DeploymentCancelled,
    DeploymentErrored,
    DeploymentInitialized,
    DeploymentProgressed,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentSuperseded,
    Message,
    ReplayFinished,
    Stage,
    Trigger,
    encode,
    tag_of,
)
from shipwreck_messaging import EXCHANGE, ORIGIN_HEADER, POSITION_HEADER
from tests.support.machine import conntrack_active, python_loop_ms
from tests.support.replays import answer_the_first_replay, running

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / ".benchmarks" / "subscriptions.jsonl"
TOKEN = "bench-token"
SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "5000"))
EVENTS = int(os.environ.get("BENCH_STATE_EVENTS", "1000000"))
NODE = uuid.UUID("00000000-0000-4000-8000-0000000000be")
# The api (or the floor's server) on one core, the clients on another (BENCH_PIN=0: wherever
# the scheduler puts them). Unpinned on loopback, the kernel tends to wake the clients on
# the api's core (the sender of each frame wakes its reader), and the two take turns on
# one core while the other idles; a client elsewhere on the network would not.
PIN = os.environ.get("BENCH_PIN", "1") != "0" and len(os.sched_getaffinity(0)) >= 2
SERVER_CPU, CLIENTS_CPU = sorted(os.sched_getaffinity(0))[:2] if PIN else (None, None)


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _report(name: str, **figures: object) -> None:
    # Taken once the run is over, on a machine as quiet as it was before it.
    record = {
        "benchmark": name,
        "python": platform.python_version(),
        **figures,
        "python_loop_ms": python_loop_ms(),
        # Every frame is a loopback packet: conntrack (loaded by Docker) makes each dearer.
        "conntrack": conntrack_active(),
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- the subscriber process ------------------------------------------------------------------


# Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it):
# every read then carries, as ancillary data, the time its bytes were queued on the socket.
_SO_TIMESTAMPNS = 35


async def _timestamping_socket(port: int) -> socket.socket:
    """A non-blocking client socket connected to ``port``, its reads kernel-timestamped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def _timestamped_read(sock: socket.socket) -> tuple[bytes, float] | None:
    """What the socket holds and the kernel's time of it (of its last segment); None when
    there is nothing to read."""
    try:
        data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    except BlockingIOError:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", payload[:16])
            return data, seconds + nanoseconds / 1e9
    if not data:
        return data, time.time()  # the peer closed: no segment, no time
    raise AssertionError("a read without its kernel timestamp (SO_TIMESTAMPNS)")


class _Subscriber:
    """A graphql-transport-ws client on a raw socket: it answers pings, subscribes, and keeps
    every text frame with two times: when the kernel queued its bytes on the socket (the
    moment the update reached the subscriber) and when this process read them (later by
    however long this one process, reading 5,000 sockets in turn, took to get to it)."""

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        port: int,
        subscribe: bytes,
        ready: asyncio.Future[None],
    ) -> None:
        self.sock = sock
        self.request = (
            f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        self.subscribe = subscribe
        self.ready = ready
        self.buffer = bytearray()
        self.upgraded = False
        self.acked = False
        self.frames: list[tuple[float, float, bytes]] = []

    def start(self) -> None:
        self.sock.sendall(self.request)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        read = _timestamped_read(self.sock)
        if read is None:
            return
        data, queued = read
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self._fail(b"connection closed")
            return
        self.data_received(data, queued, time.time())

    def data_received(self, data: bytes, queued: float, now: float) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self._fail(bytes(self.buffer[:200]))
                return
            del self.buffer[: end + 4]
            self.upgraded = True
            self._send(1, b'{"type":"connection_init"}')
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            payload = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            if opcode == 1:
                self._text(queued, now, payload)
            elif opcode == 9:
                self._send(10, payload)  # pong: uvicorn closes a socket that does not answer
            elif opcode == 8:
                self._fail(b"closed by the api: " + payload)

    def _text(self, queued: float, now: float, payload: bytes) -> None:
        if not self.acked:
            if b"connection_ack" in payload:
                self.acked = True
                self._send(1, self.subscribe)
            return
        if b'"ping"' in payload[:40]:
            self._send(1, b'{"type":"pong"}')
            return
        self.frames.append((queued, now, payload))
        if not self.ready.done():
            self.ready.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)  # a few bytes: the socket takes them

    def _fail(self, why: bytes) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why.decode(errors="replace")))


def subscribers_main(pipe: Connection, port: int, deployment_id: str, count: int) -> None:
    """The client process: ``count`` subscribers; says "ready", then reports what it got."""
    _pin(CLIENTS_CPU)
    asyncio.run(_subscribers(pipe, port, deployment_id, count))


async def _subscribers(pipe: Connection, port: int, deployment_id: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    query = "subscription($id: ID!) { deploymentUpdates(id: $id) { id status sequence } }"
    subscribe = json.dumps(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": query, "variables": {"id": deployment_id}},
        }
    ).encode()
    clients: list[_Subscriber] = []
    started = time.perf_counter()
    for start in range(0, count, 250):  # a burst at a time: the listen backlog is finite
        batch = []
        for _ in range(start, min(start + 250, count)):
            ready: asyncio.Future[None] = loop.create_future()
            sock = await _timestamping_socket(port)
            client = _Subscriber(sock, "127.0.0.1", port, subscribe, ready)
            client.start()
            clients.append(client)
            batch.append(ready)
        await asyncio.wait_for(asyncio.gather(*batch), 120)
    pipe.send(("ready", time.perf_counter() - started))
    await loop.run_in_executor(None, pipe.recv)  # "collect"
    results = []
    for client in clients:
        got = []
        for queued, read, payload in client.frames[1:]:  # the first: state at subscription
            update = json.loads(payload)["payload"]["data"]["deploymentUpdates"]
            got.append((update["status"], update["sequence"], queued, read))
        results.append(got)
    pipe.send(("results", results))
    for client in clients:
        client.close()


# --- the api process, RabbitMQ ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"shipwreck-bench-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _lifecycle(d: uuid.UUID, at: datetime) -> list[Message]:
    url = "http://bench.apps.example.com"
    commit = "b" * 40
    return [
        DeploymentRequested(
            deployment_id=d,
            repo_url="https://git.example.com/bench/app.git",
            branch="main",
            watch=True,
            trigger=Trigger.MANUAL,
            actor="bench",
            at=at,
        ),
        DeploymentInitialized(
            deployment_id=d,
            app="bench",
            repo_url="https://git.example.com/bench/app.git",
            branch="main",
            trigger=Trigger.MANUAL,
            at=at,
        ),
        DeploymentScheduled(deployment_id=d, app="bench", node_id=NODE, at=at),
        DeploymentProgressed(
            deployment_id=d, app="bench", stage=Stage.CLONING, node_id=NODE, at=at
        ),
        DeploymentProgressed(
            deployment_id=d, app="bench", stage=Stage.BUILDING, node_id=NODE, commit=commit, at=at
        ),
        DeploymentProgressed(
            deployment_id=d, app="bench", stage=Stage.STARTING, node_id=NODE, commit=commit, at=at
        ),
        DeploymentRunning(
            deployment_id=d, app="bench", node_id=NODE, commit=commit, url=url, at=at
        ),
    ]


def _start_api(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shipwreck_api"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Before the interpreter starts, so every thread of the api inherits it.
            preexec_fn=(lambda: _pin(SERVER_CPU)) if PIN else None,
        )


def test_status_update_fan_out_to_5000_subscribers(vhost: str, tmp_path: Path) -> None:
    asyncio.run(_fan_out(vhost, tmp_path))


async def _fan_out(amqp_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(
        SHIPWRECK_AMQP_URL=amqp_url,
        SHIPWRECK_API_PORT=str(port),
        SHIPWRECK_API_TOKEN=TOKEN,
        SHIPWRECK_STATE_DIR=str(tmp_path),
        SHIPWRECK_LOG_LEVEL="WARNING",
    )
    api = _start_api(env, tmp_path / "api.log")
    clients: multiprocessing.process.BaseProcess | None = None
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            # No orchestrator runs here: play its answer to the api's start-up replay.
            channel = await connection.channel(publisher_confirms=True)
            async with running(answer_the_first_replay, channel) as answering:
                await asyncio.wait([answering], timeout=30)
                if not answering.done():
                    raise AssertionError("the api asked for no replay within 30 s")
            exchange = await channel.get_exchange(EXCHANGE)
            d = uuid.uuid4()
            steps = _lifecycle(d, datetime.now(UTC))

            async def relay(position: int, message: Message) -> None:
                await exchange.publish(
                    aio_pika.Message(
                        encode(message),
                        headers={ORIGIN_HEADER: "orchestrator", POSITION_HEADER: position},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=tag_of(message),
                )

            await relay(1, steps[0])
            query = {"query": f'{{ deployment(id: "{d}") {{ status }} }}'}
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for _ in range(100):
                answer = (await http.post(f"{base}/graphql", json=query, headers=auth)).json()
                if answer["data"]["deployment"]:
                    break
                await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(1)
        idle_kib = _rss_kib(api.pid)

        parent, child = multiprocessing.get_context("spawn").Pipe()
        clients = multiprocessing.get_context("spawn").Process(
            target=subscribers_main, args=(child, port, str(d), SUBSCRIBERS), daemon=True
        )
        clients.start()
        loop = asyncio.get_running_loop()
        kind, connect_seconds = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 600)
        assert kind == "ready"
        await asyncio.sleep(2)
        subscribed_kib = _rss_kib(api.pid)

        published: dict[str, float] = {}
        user: dict[str, float] = {}
        system: dict[str, float] = {}
        load = os.getloadavg()
        for position, message in enumerate(steps[1:], start=2):
            status = _status_of(message)
            user_before, system_before = _cpu_seconds(api.pid)
            published[status] = time.time()
            await relay(position, message)
            await asyncio.sleep(3)  # all of it arrives well within this
            user_after, system_after = _cpu_seconds(api.pid)
            user[status] = user_after - user_before
            system[status] = system_after - system_before
        parent.send("collect")
        kind, results = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 600)
        assert kind == "results"
    finally:
        await connection.close()
        if clients is not None:
            clients.terminate()
            clients.join(10)
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()

    # Publish to the update's bytes queued on the subscriber's socket (the kernel's time).
    latencies = [(at - published[s]) * 1000 for got in results for s, _, at, _ in got]
    # Publish to the client process reading them: the above, plus the wait of a socket
    # while this one process of 5,000 subscribers reads the ones before it.
    read_latencies = [(at - published[s]) * 1000 for got in results for s, _, _, at in got]
    by_update = {
        status: [(q - published[s]) * 1000 for g in results for s, _, q, _ in g if s == status]
        for status in published
    }
    per_update = {status: round(_percentile(v, 99), 1) for status, v in by_update.items()}
    # When the first subscriber of each update had it: the way to the publish loop (the
    # broker, the api's receive and fold, the one execution); the rest is the loop.
    first_per_update = {status: round(min(v), 1) for status, v in by_update.items()}
    expected = len(published) * SUBSCRIBERS
    in_order = all([s for s, *_ in got] == list(published) for got in results)
    _report(
        "subscription-fan-out",
        subscribers=SUBSCRIBERS,
        pinned=PIN,
        updates=len(published),
        received=len(latencies),
        expected=expected,
        every_subscriber_every_update_in_order=in_order,
        connect_and_subscribe_s=round(connect_seconds, 1),
        latency_ms_p50=round(_percentile(latencies, 50), 1),
        latency_ms_p99=round(_percentile(latencies, 99), 1),
        latency_ms_max=round(max(latencies), 1),
        p99_ms_per_update=per_update,
        first_ms_per_update=first_per_update,
        read_latency_ms_p50=round(_percentile(read_latencies, 50), 1),
        read_latency_ms_p99=round(_percentile(read_latencies, 99), 1),
        # Over the 3 s after each publish: the update, and uvicorn's keep-alive pings.
        api_cpu_s_per_update=round(
            statistics.mean(user.values()) + statistics.mean(system.values()), 3
        ),
        api_user_s_per_update=round(statistics.mean(user.values()), 3),
        api_system_s_per_update=round(statistics.mean(system.values()), 3),
        loadavg_before_updates=[round(x, 2) for x in load],
        api_rss_idle_mib=round(idle_kib / 1024, 1),
        api_rss_subscribed_mib=round(subscribed_kib / 1024, 1),
        kib_per_idle_subscriber=round((subscribed_kib - idle_kib) / SUBSCRIBERS, 1),
    )
    assert len(latencies) == expected
    assert in_order


# --- the floor: one pre-encoded frame written to every socket in one loop ----------------------

# The size of the benchmark's update frames (deploymentUpdates { id status sequence }).
_FLOOR_MESSAGE = b'{"id":"1","type":"next","payload":{"data":"' + b"x" * 82 + b'"}}'
_FLOOR_FRAME = b"\x81\x7e" + len(_FLOOR_MESSAGE).to_bytes(2, "big") + _FLOOR_MESSAGE
_FLOOR_ROUNDS = 6


class _Reader:
    """Keeps the kernel's time and the read's time of every read, as the subscribers do."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads: list[tuple[float, float]] = []
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        read = _timestamped_read(self.sock)
        if read is not None and read[0]:
            self.reads.append((read[1], time.time()))


def floor_clients_main(pipe: Connection, port: int, count: int) -> None:
    """The client process of the floor: ``count`` sockets; says "ready", then reports."""
    _pin(CLIENTS_CPU)
    asyncio.run(_floor_clients(pipe, port, count))


async def _floor_clients(pipe: Connection, port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    readers = [_Reader(await _timestamping_socket(port)) for _ in range(count)]
    pipe.send("ready")
    await loop.run_in_executor(None, pipe.recv)  # "collect"
    pipe.send([reader.reads for reader in readers])


def floor_server_main(pipe: Connection, count: int) -> None:
    """The server process of the floor, on uvloop as the api is."""
    _pin(SERVER_CPU)
    import uvloop

    uvloop.run(_floor_server(pipe, count))


async def _floor_server(pipe: Connection, count: int) -> None:
    import resource

    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports are not asyncio.Transport subclasses, but write the same.
            transports.append(cast(asyncio.Transport, transport))

    server = await loop.create_server(Accepted, "127.0.0.1", 0, backlog=4096)
    pipe.send(server.sockets[0].getsockname()[1])
    await loop.run_in_executor(None, pipe.recv)  # "go": every client is connected
    assert len(transports) == count
    rounds = []
    for _ in range(_FLOOR_ROUNDS):
        before = resource.getrusage(resource.RUSAGE_THREAD)
        started, clock = time.time(), time.perf_counter()
        for transport in transports:
            transport.write(_FLOOR_FRAME)
        wall = time.perf_counter() - clock
        after = resource.getrusage(resource.RUSAGE_THREAD)
        rounds.append(
            (started, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
        )
        await asyncio.sleep(1)
    pipe.send(rounds)
    server.close()


def test_floor_one_frame_written_to_5000_sockets_in_one_loop() -> None:
    spawn = multiprocessing.get_context("spawn")
    server_pipe, server_end = spawn.Pipe()
    client_pipe, client_end = spawn.Pipe()
    server = spawn.Process(target=floor_server_main, args=(server_end, SUBSCRIBERS), daemon=True)
    server.start()
    clients: multiprocessing.process.BaseProcess | None = None
    try:
        port = server_pipe.recv()
        clients = spawn.Process(
            target=floor_clients_main, args=(client_end, port, SUBSCRIBERS), daemon=True
        )
        clients.start()
        assert client_pipe.poll(300)
        assert client_pipe.recv() == "ready"
        time.sleep(1)
        load = os.getloadavg()
        server_pipe.send("go")
        assert server_pipe.poll(300)
        rounds = server_pipe.recv()
        client_pipe.send("collect")
        assert client_pipe.poll(300)
        reads: list[list[tuple[float, float]]] = client_pipe.recv()
    finally:
        for process in (server, clients):
            if process is not None:
                process.terminate()
                process.join(10)
    assert all(len(r) == _FLOOR_ROUNDS for r in reads)  # one read per frame and socket
    latencies = [
        (socket_reads[i][0] - started) * 1000
        for socket_reads in reads
        for i, (started, *_) in enumerate(rounds)
    ]
    read_latencies = [
        (socket_reads[i][1] - started) * 1000
        for socket_reads in reads
        for i, (started, *_) in enumerate(rounds)
    ]
    _report(
        "subscription-fan-out-floor",
        sockets=SUBSCRIBERS,
        pinned=PIN,
        frame_bytes=len(_FLOOR_FRAME),
        rounds=_FLOOR_ROUNDS,
        loadavg_before=[round(x, 2) for x in load],
        loop_ms=[round(wall * 1000, 1) for _, wall, _, _ in rounds],
        loop_user_ms=[round(u * 1000, 1) for _, _, u, _ in rounds],
        loop_system_ms=[round(s * 1000, 1) for _, _, _, s in rounds],
        latency_ms_p50=round(_percentile(latencies, 50), 1),
        latency_ms_p99=round(_percentile(latencies, 99), 1),
        latency_ms_max=round(max(latencies), 1),
        read_latency_ms_p50=round(_percentile(read_latencies, 50), 1),
        read_latency_ms_p99=round(_percentile(read_latencies, 99), 1),
    )


def _status_of(message: Message) -> str:
    match message:
        case DeploymentProgressed(stage=stage):
            return stage.value
        case DeploymentInitialized():
            return "INITIALIZED"
        case DeploymentScheduled():
            return "SCHEDULED"
        case DeploymentRunning():
            return "RUNNING"
    raise AssertionError(message)


# --- time travel over a million events ----------------------------------------------------------


def _history(total: int, seed: int = 1) -> Iterator[tuple[Message, int]]:
    """``total`` events (about) of a busy platform: 1,000 apps, redeploys that take over,
    failures and cancellations, each deployment over a few minutes, one every ~2 s."""
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    position = 0
    running: dict[str, uuid.UUID] = {}
    n = 0
    while position < total:
        n += 1
        app = f"app-{rng.randrange(1000)}"
        d = uuid.UUID(int=rng.getrandbits(128), version=4)
        at = t0 + timedelta(seconds=2 * n)
        repo = f"https://git.example.com/team/{app}.git"
        outcome = rng.random()

        def step(seconds: float) -> datetime:
            nonlocal at
            at += timedelta(seconds=seconds)
            return at

        events: list[Message] = [
            DeploymentRequested(
                deployment_id=d,
                repo_url=repo,
                branch="main",
                watch=True,
                trigger=Trigger.WATCH,
                actor="system:watcher",
                at=at,
            ),
            DeploymentInitialized(
                deployment_id=d,
                app=app,
                repo_url=repo,
                branch="main",
                trigger=Trigger.WATCH,
                at=step(0.1),
            ),
        ]
        if app not in running:
            events.append(
                AppWatchChanged(app=app, repo_url=repo, branch="main", watching=True, at=at)
            )
        if outcome < 0.05:
            events.append(
                DeploymentCancelled(
                    deployment_id=d,
                    app=app,
                    stage=DeploymentStatus.INITIALIZED,
                    actor="admin",
                    at=step(1),
                )
            )
        else:
            commit = f"{n:040x}"
            events += [
                DeploymentScheduled(deployment_id=d, app=app, node_id=NODE, at=step(0.2)),
                DeploymentProgressed(
                    deployment_id=d, app=app, stage=Stage.CLONING, node_id=NODE, at=step(0.3)
                ),
                DeploymentProgressed(
                    deployment_id=d,
                    app=app,
                    stage=Stage.BUILDING,
                    node_id=NODE,
                    commit=commit,
                    at=step(2),
                ),
            ]
            if outcome < 0.2:
                events.append(
                    DeploymentErrored(
                        deployment_id=d,
                        app=app,
                        stage=DeploymentStatus.BUILDING,
                        reason="build failed",
                        at=step(60),
                    )
                )
            else:
                events += [
                    DeploymentProgressed(
                        deployment_id=d,
                        app=app,
                        stage=Stage.STARTING,
                        node_id=NODE,
                        commit=commit,
                        at=step(90),
                    ),
                    DeploymentRunning(
                        deployment_id=d,
                        app=app,
                        node_id=NODE,
                        commit=commit,
                        url=f"http://{app}.apps.example.com",
                        at=step(5),
                    ),
                ]
                old = running.get(app)
                if old is not None:
                    events.append(
                        DeploymentSuperseded(deployment_id=old, app=app, by=d, at=step(1))
                    )
                running[app] = d
        for event in events:
            position += 1
            yield event, position


def test_state_at_over_a_million_events() -> None:
    model = ReadModel()
    started = time.perf_counter()
    first_at = last_at = None
    last_position = 0
    for event, position in _history(EVENTS):
        model.apply(event, origin="orchestrator", position=position)
        first_at = first_at or event.at
        last_at = event.at
        last_position = position
    loaded = time.perf_counter() - started
    assert first_at is not None
    assert last_at is not None
    counts = model.counts()
    gc.collect()
    span = last_at - first_at
    timings: dict[str, float] = {}
    for label, fraction in (("10%", 0.1), ("50%", 0.5), ("90%", 0.9), ("now", 1.0)):
        at = first_at + span * fraction
        t = time.perf_counter()
        state = model.state_at(at)
        timings[label] = round(time.perf_counter() - t, 3)
        assert state.at == at
    # The same question without reusing folded records: every deployment folded again.
    middle = first_at + span / 2
    t = time.perf_counter()
    refolded = state_at(middle, model._events, model._watch, model.nodes)
    full_fold = time.perf_counter() - t
    assert refolded.records == model.state_at(middle).records
    # And through GraphQL, as a client asks it.
    from shipwreck_api.commands import Actions
    from shipwreck_api.live import Live

    live = Live(model)
    # The model holds the whole story, as after the orchestrator's replay: say it is over,
    # or questions would wait for it (and then answer REBUILDING).
    finished = ReplayFinished(origin=ORCHESTRATOR_ORIGIN, last_position=last_position, at=last_at)
    live.receive(finished, {})
    context = {"api": ApiContext(live=live, actions=Actions(live, _NoBus()), actor="bench")}
    query = """query($at: DateTime!) { state(at: $at) {
        apps { name url current { id commit } }
        deployments(first: 50) { id app status }
        nodes { id } } }"""
    t = time.perf_counter()
    answer = asyncio.run(
        schema.execute(query, variable_values={"at": middle.isoformat()}, context_value=context)
    )
    graphql_s = time.perf_counter() - t
    assert answer.errors is None, answer.errors
    _report(
        "state-at",
        events=counts.events,
        deployments=counts.deployments,
        apps=counts.apps,
        load_s=round(loaded, 1),
        state_at_s=timings,
        state_at_full_refold_s=round(full_fold, 2),
        graphql_state_at_middle_s=round(graphql_s, 2),
        rss_mib=round(_rss_kib(os.getpid()) / 1024),
    )


class _NoBus:
    async def send(self, command: Message) -> None:
        raise AssertionError("the benchmark sends no command")
