"""Subscription updates written straight to the subscribers' websockets.

Measured with 5,000 subscribers of one deployment (docs/BENCHMARKS.md, "Subscriptions"):
an update's way through strawberry (the subscriber's async generators, graphql-core's
per-event mapping, the handler's send), Litestar and uvicorn's ASGI ``send`` cost about
85 µs of CPU per subscriber, and the task switch to wake each subscriber came on top; the
``send`` system call itself costs 10-15 µs. So a subscriber that has caught up hands its
subscription over (:meth:`~shipwreck_api.broadcast.Subscription.hand_over`) to a
:class:`SocketSink`: the broadcaster then calls it synchronously for every update, the
update is executed once per selection (:mod:`shipwreck_api.fanout`), its ``next`` message
encoded and framed once per (selection, operation id), and each subscriber costs one
``transport.write`` of those bytes. The websockets library's ``broadcast()`` works the same
way for its own connections; unlike it, a socket above its high-water mark is not written
to (see :meth:`FrameWebSocketProtocol.write_frame`).

What the subscriber's own generator (:mod:`shipwreck_api.live`) still does: everything up
to catching up (the first state, what ``after`` asks for, a refill after an overflow),
the end of the stream (strawberry sends ``complete`` once the generator returns, after
the last frame), and every update the sink cannot take: a socket that is closing or not
draining, or a result with errors. Such an update goes to the subscriber's bounded queue
and on the usual way, so nothing is lost, reordered or sent twice. uvicorn's keep-alive
pings go on as before: they are written between whole frames.

Served by anything but :class:`FrameWebSocketProtocol` (tests' in-process clients, another
ASGI server), no socket is offered and every update takes the usual way.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar
from weakref import WeakValueDictionary

from graphql import ExecutionResult
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from shipwreck_api.fanout import SharedResultExecutor, encode_next, subscription_executor

T = TypeVar("T")
Context = TypeVar("Context")
RootValue = TypeVar("RootValue")

FRAMES_EXTENSION = "shipwreck.frames"
"""The ASGI scope extension under which :class:`FrameWebSocketProtocol` offers itself."""

_OPERATION: ContextVar[str | None] = ContextVar("shipwreck_operation_id", default=None)


class FrameSocket(Protocol):
    """A websocket that takes complete, already framed messages."""

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` now, or say False if the socket cannot take it now."""
        ...


class FrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, which also writes pre-framed messages.

    ``python -m shipwreck_api`` serves websockets with it; it puts itself in the scope's
    extensions, from where the api's context takes it as the connection's socket.
    """

    # Whether the transport is above its high-water mark; the same as uvicorn's
    # ``writable`` event being clear, kept as a plain flag for the per-update loop.
    _paused = False

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark."""
        self._paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        """The transport's buffer has drained below its low-water mark."""
        self._paused = False
        super().resume_writing()

    def handle_connect(self, event: Request) -> None:
        """Accept the upgrade as uvicorn does, and offer this socket to the application."""
        super().handle_connect(event)
        if self.response.status_code == 101:
            extensions = self.scope.get("extensions")
            if extensions is not None:
                extensions[FRAMES_EXTENSION] = {"socket": self}

    def write_frame(self, frame: bytes) -> bool:
        """Write one complete frame, unless the socket is closing or not draining.

        Not past the closing handshake (nothing may follow a close frame), and not while
        the transport is above its high-water mark (uvicorn's ``send`` waits for it to
        drain): the caller then queues the message instead, so what one slow client has
        not read stays bounded by the high-water mark plus its subscription's queue.
        """
        if (
            self._paused
            or self.close_sent
            or not self.handshake_complete
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True


def socket_of(scope: Any) -> FrameSocket | None:
    """The socket :class:`FrameWebSocketProtocol` offered in this websocket's scope."""
    extensions = scope.get("extensions") or {}
    offered = extensions.get(FRAMES_EXTENSION) or {}
    socket: FrameSocket | None = offered.get("socket")
    return socket


def serve_operation(operation_id: str) -> None:
    """Say which graphql-transport-ws operation the current task runs.

    Each operation runs in a task of its own (strawberry's ``handle_subscribe``), so the
    value is seen by that operation's resolvers and nothing else.
    """
    _OPERATION.set(operation_id)


class FrameTransportWSHandler(BaseGraphQLTransportWSHandler[Context, RootValue]):
    """strawberry's graphql-transport-ws handler, telling resolvers their operation id."""

    async def run_operation(self, operation: Operation[Context, RootValue]) -> None:
        """Run the operation as strawberry does; its resolvers can read its id."""
        serve_operation(operation.id)
        await super().run_operation(operation)


class _Group:
    """Stands for one (selection, operation id): a cheap key, hashed by identity, for the
    per-update loop (hashing the selection's signature for each subscriber is not)."""

    __slots__ = ("__weakref__",)


# Each sink holds its group: an entry lives as long as one subscriber of the group.
_GROUPS: WeakValueDictionary[Hashable, _Group] = WeakValueDictionary()


def _group(signature: Hashable, operation_id: str) -> _Group:
    key = (signature, operation_id)
    group = _GROUPS.get(key)
    if group is None:
        group = _GROUPS[key] = _Group()
    return group


class SocketSink(Generic[T]):
    """One subscription's websocket, written to without going through its generator.

    Subscribers whose frames are byte for byte the same (one selection with the same
    variable values below the subscription field, one operation id) form a group: for
    each update, the first of them executes, encodes and frames it, the others reuse the
    bytes from the publish's ``shared`` scratch.
    """

    __slots__ = ("_executor", "_operation", "_wrap", "_write", "group")

    def __init__(
        self,
        socket: FrameSocket,
        operation_id: str,
        executor: SharedResultExecutor,
        wrap: Callable[[T], object],
    ) -> None:
        self._write = socket.write_frame
        self._operation = operation_id
        self._executor = executor
        self._wrap = wrap
        signature = executor.selection_signature()
        # A selection the executor cannot compare with others is a group of its own.
        self.group = _Group() if signature is None else _group(signature, operation_id)

    def send(self, item: T, shared: dict[Any, Any]) -> bool:
        """Write ``item``'s ``next`` frame; False if it must take the usual way."""
        frame: bytes | None = shared.get(self.group)
        if frame is None:
            frame = shared[self.group] = self._frame(item)
        if not frame:
            return False
        return self._write(frame)

    def _frame(self, item: T) -> bytes:
        # Exactly what graphql-core does for each event of the subscription (and the
        # executor shares the execution with every other group of the same selection).
        executor = self._executor.build_per_event_executor(self._wrap(item))
        result = executor.execute_operation(False)
        if not isinstance(result, ExecutionResult) or result.errors or result.extensions:
            # Errors are processed (logged, formatted) by strawberry: the usual way. b""
            # tells the group's other subscribers the same without executing again.
            return b""
        message = encode_next(self._operation, result.data).encode()
        return Frame(Opcode.TEXT, message).serialize(mask=False)


def sink(socket: FrameSocket | None, wrap: Callable[[T], object]) -> SocketSink[T] | None:
    """A sink for the subscription being resolved, if it is served over a frame socket.

    Called from a subscription resolver: the operation's id and executor are those of the
    operation task it runs in.
    """
    if socket is None:
        return None
    operation_id = _OPERATION.get()
    executor = subscription_executor()
    if operation_id is None or executor is None:
        return None
    return SocketSink(socket, operation_id, executor, wrap)
