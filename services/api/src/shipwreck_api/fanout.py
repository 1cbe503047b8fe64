"""One update, executed once and serialized once for every subscriber that asked the same.

DESIGN section 8: the api fans each update out to its subscribers "once per update (not one
query execution per subscriber)". The broadcasters hand every subscriber the same record;
this module makes the GraphQL side share the work too:

- :class:`SharedResultExecutor` is graphql-core's executor with one change: a subscription
  event whose payload is shared (:class:`Shared`) is executed once per distinct selection
  (the same query text, operation and variable values below the subscription field) and
  the result is reused for every other subscriber of that update.
- :func:`encode_frame` turns a graphql-transport-ws ``next`` message into JSON, encoding a
  shared result's payload once and only splicing each subscriber's operation id around it.
- :func:`subscription_executor` gives a subscription's resolver the executor of its
  operation, so that later events can be executed without the resolver's generator
  (:mod:`shipwreck_api.direct`).

Both caches are small and bounded (the latest updates only), and an entry holds its payload,
so an object's identity is never confused with a later object's reused ``id()``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from graphql import ExecutionResult, FieldNode, OperationType, Visitor, visit
from graphql.language import Node, VariableNode
from graphql.pyutils import RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

CACHE_SIZE = 512
"""Updates whose results are kept; far more than are in flight at once."""


class Shared(Protocol):
    """A subscription payload whose content is the same object for every subscriber."""

    def shared_identity(self) -> object:
        """The object shared by every subscriber of one update (for example its record)."""
        ...


def shared_identity(payload: object) -> object | None:
    """The shared object behind ``payload``, or None if it is not :class:`Shared`."""
    # getattr rather than isinstance on a runtime-checkable Protocol: this runs once per
    # subscriber per update, and the Protocol check costs as much as the rest together.
    identity = getattr(payload, "shared_identity", None)
    return identity() if callable(identity) else None


@dataclass(slots=True)
class _Shared:
    """The per-event executor of an update whose result another subscriber already made."""

    result: ExecutionResult

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self.result


@dataclass(slots=True)
class _Entry:
    identity: object
    result: ExecutionResult
    frame: str | None = None


class _Results:
    """Executed results by (update, selection), and their encoded payloads by result."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[int, Hashable], _Entry] = OrderedDict()
        self._by_data: dict[int, _Entry] = {}
        self.hits = 0
        self.misses = 0

    def get(self, identity: object, signature: Hashable) -> ExecutionResult | None:
        entry = self._entries.get((id(identity), signature))
        if entry is None or entry.identity is not identity:
            self.misses += 1
            return None
        self.hits += 1
        return entry.result

    def put(self, identity: object, signature: Hashable, result: ExecutionResult) -> None:
        key = (id(identity), signature)
        entry = _Entry(identity, result)
        old = self._entries.pop(key, None)
        if old is not None:
            self._by_data.pop(id(old.result.data), None)
        self._entries[key] = entry
        self._by_data[id(result.data)] = entry
        while len(self._entries) > self.size:
            _, evicted = self._entries.popitem(last=False)
            if self._by_data.get(id(evicted.result.data)) is evicted:
                del self._by_data[id(evicted.result.data)]

    def frame(self, data: object) -> str | None:
        """The encoded ``{"data": ...}`` payload of a shared result, encoded once."""
        entry = self._by_data.get(id(data))
        if entry is None or entry.result.data is not data:
            return None
        if entry.frame is None:
            entry.frame = msgspec.json.encode({"data": data}).decode()
        return entry.frame

    def clear(self) -> None:
        self._entries.clear()
        self._by_data.clear()


RESULTS = _Results()
"""The process's shared results (one schema, one event loop)."""


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: object) -> None:
        self.names.add(node.name.value)


def _variables(nodes: list[Node]) -> set[str]:
    visitor = _Variables()
    for node in nodes:
        visit(node, visitor)
    return visitor.names


_SUBSCRIPTION: ContextVar[SharedResultExecutor | None] = ContextVar(
    "shipwreck_subscription_executor", default=None
)


def subscription_executor() -> SharedResultExecutor | None:
    """The executor of the subscription operation this task runs, if any."""
    return _SUBSCRIPTION.get()


class SharedResultExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, sharing the execution of one update among subscribers."""

    _fanout_signature: Hashable | None
    _fanout_key: tuple[object, Hashable] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.operation.operation is OperationType.SUBSCRIPTION:
            # Built in the operation's own task, before its resolver's generator first
            # runs (in the same task): the resolver finds its executor here. Per-event
            # executors are copies and do not pass through __init__.
            _SUBSCRIPTION.set(self)

    def selection_signature(self) -> Hashable | None:
        """What an event's result depends on besides the event (None: not comparable)."""
        return self._signature()

    def build_per_event_executor(self, payload: Any) -> Any:
        """The executor of one subscription event, which knows whether it can be shared;
        for an update already executed for another subscriber, just its result."""
        identity = shared_identity(payload)
        signature = self._signature() if identity is not None else None
        if signature is not None:
            shared = RESULTS.get(identity, signature)
            if shared is not None:
                return _Shared(shared)
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, SharedResultExecutor)
        # graphql-core shares these memos between a subscription and all its events, keyed
        # by objects each event creates anew: a long-lived subscription would keep every
        # event's entries forever. One event's memo is only of use to that event.
        executor._relevant_sub_fields = {}
        executor._stream_usages = RefMap()
        if signature is not None:
            executor._fanout_key = (identity, signature)
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        """Execute, or reuse the result another subscriber's execution of the event made."""
        key = self._fanout_key
        if key is None:
            return super().execute_operation(serially)
        identity, signature = key
        result = super().execute_operation(serially)
        # Only complete, error-free results are shared (every resolver here is synchronous).
        if isinstance(result, ExecutionResult) and not result.errors:
            RESULTS.put(identity, signature, result)
        return result

    def _signature(self) -> Hashable | None:
        # What the result of an event depends on besides the event: the selection below the
        # subscription field and the variables used there. The subscription field's own
        # arguments (which deployment, resume after what) only chose the event stream.
        try:
            return self._fanout_signature
        except AttributeError:
            pass
        signature: Hashable | None = None
        operation = self.operation
        roots = operation.selection_set.selections
        if operation.loc is not None and all(isinstance(s, FieldNode) for s in roots):
            nested: list[Node] = [
                *(operation.directives or ()),
                *self.fragment_definitions.values(),
            ]
            for root in roots:
                assert isinstance(root, FieldNode)
                nested.extend(root.directives or ())
                if root.selection_set is not None:
                    nested.append(root.selection_set)
            coerced: Mapping[str, Any] = self.variable_values.coerced
            values = tuple(
                (name, json.dumps(coerced.get(name), sort_keys=True, default=str))
                for name in sorted(_variables(nested))
            )
            name = operation.name.value if operation.name else None
            signature = (operation.loc.source.body, name, values)
        self._fanout_signature = signature
        return signature


def encode_frame(message: Mapping[str, Any]) -> str | None:
    """A graphql-transport-ws ``next`` message carrying a shared result, as JSON; None for
    any other message (the caller encodes it as usual)."""
    if message.get("type") != "next" or len(message) != 3:
        return None
    payload = message.get("payload")
    if not isinstance(payload, Mapping) or len(payload) != 1 or "data" not in payload:
        return None
    frame = RESULTS.frame(payload["data"])
    if frame is None:
        return None
    return _next_message(message["id"], frame)


def encode_next(operation_id: str, data: object) -> str:
    """The graphql-transport-ws ``next`` message of one result's ``data``, as JSON (a
    shared result's payload is encoded once)."""
    frame = RESULTS.frame(data)
    if frame is None:
        frame = msgspec.json.encode({"data": data}).decode()
    return _next_message(operation_id, frame)


def _next_message(operation_id: object, payload: str) -> str:
    return f'{{"id":{json.dumps(operation_id)},"type":"next","payload":{payload}}}'
