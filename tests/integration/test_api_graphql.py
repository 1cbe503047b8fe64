"""The real api on a real RabbitMQ (a vhost of its own): GraphQL in, commands out, events in.

The tests play the other services: they observe what the api publishes through their own
queues bound to the command tags, and publish what the orchestrator's relay would (each
event with its origin and position headers), including answering a replay request.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import anyio.to_thread
import pytest
from litestar import Litestar
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import AsyncTestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from shipwreck_api.app import create_app
from shipwreck_api.commands import RabbitCommandBus
from shipwreck_api.errors import Unavailable
from shipwreck_api.settings import ApiSettings
from shipwreck_contracts import (
    CancelDeployment,
    DeploymentRequested,
    DeploymentStatus,
    LogLine,
    LogStream,
    Message,
    NodeHeartbeat,
    ReplayFinished,
    ReplayRequested,
    RequestDeployment,
    RollbackApp,
    SetAppWatch,
    StopApp,
    decode_message,
    encode,
    tag_of,
)
from shipwreck_contracts.gitpolicy import RefusedRemote, check_repo_url
from shipwreck_messaging import EXCHANGE, ORIGIN_HEADER, POSITION_HEADER, create_broker
from tests.support.replays import answer_as_an_empty_log
from tests.unit.test_api_story import NODE, Log, Relayed, deployment, refused_cancel, story

pytestmark = [pytest.mark.anyio, pytest.mark.infra]

TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COMMAND_TAGS = [
    tag_of(c) for c in (RequestDeployment, CancelDeployment, RollbackApp, StopApp, SetAppWatch)
]
S = DeploymentStatus


def _public(host: str) -> Sequence[str]:
    return ["93.184.216.34"]  # every host is public here: no DNS in tests


# --- infrastructure ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost for this module, so nothing published here outlives it."""
    vhost = f"shipwreck-api-test-{uuid.uuid4().hex[:10]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([*ctl, "delete_vhost", vhost], check=True, capture_output=True, timeout=60)


def api(amqp_url: str, tmp_path: Path, **overrides: Any) -> Litestar:
    """The real api, as ``python -m shipwreck_api`` builds it."""
    settings = ApiSettings(
        amqp_url=amqp_url,
        api_token=TOKEN,
        state_dir=str(tmp_path),
        **{"unknown_deployment_wait_seconds": 5.0, "replay_retry_seconds": 0.2, **overrides},
    )
    return create_app(settings, resolver=_public)


@dataclass
class Spy:
    """A temporary queue bound to some tags: what was published under them."""

    queue: aio_pika.abc.AbstractQueue

    async def messages(self, *, settle: float = 0.5) -> list[tuple[Message, dict[str, Any]]]:
        """Everything received, after ``settle`` seconds without a new message."""
        got: list[tuple[Message, dict[str, Any]]] = []
        quiet_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - quiet_since < settle:
            incoming = await self.queue.get(no_ack=True, fail=False)
            if incoming is None:
                await asyncio.sleep(0.02)
                continue
            got.append((decode_message(incoming.body), dict(incoming.headers)))
            quiet_since = asyncio.get_running_loop().time()
        return got

    async def next_request(self, origin: str = "orchestrator") -> ReplayRequested:
        """The next replay request to ``origin`` (the api asks the watcher for its too)."""
        while True:
            message, _ = await self.next()
            if isinstance(message, ReplayRequested) and message.origin == origin:
                return message

    async def next(self) -> tuple[Message, dict[str, Any]]:
        """The next message (waits for it, up to 10 s)."""
        for _ in range(500):
            incoming = await self.queue.get(no_ack=True, fail=False)
            if incoming is not None:
                return decode_message(incoming.body), dict(incoming.headers)
            await asyncio.sleep(0.02)
        raise AssertionError(f"nothing arrived on {self.queue.name} within 10 s")


@dataclass
class Orchestra:
    """Plays the other services: publishes what they would, and spies on the api."""

    channel: aio_pika.abc.AbstractChannel
    exchange: aio_pika.abc.AbstractExchange

    async def spy(self, tags: Sequence[str]) -> Spy:
        """A queue that receives every message published under ``tags`` from now on."""
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        for tag in tags:
            await queue.bind(self.exchange, routing_key=tag)
        return Spy(queue)

    async def relay(self, items: Sequence[Relayed], *, to: str | None = None) -> None:
        """Publish as the orchestrator's relay does: live on the exchange, or to a queue."""
        for item in items:
            await self._send(
                item.message,
                {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position},
                to=to,
            )

    async def send(self, message: Message, *, to: str | None = None) -> None:
        """Publish an untracked message (heartbeats, log lines, ReplayFinished)."""
        await self._send(message, {}, to=to)

    async def _send(self, message: Message, headers: dict[str, Any], *, to: str | None) -> None:
        body = aio_pika.Message(
            encode(message),
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        )
        if to is None:
            await self.exchange.publish(body, routing_key=tag_of(message))
        else:
            await self.channel.default_exchange.publish(body, routing_key=to)


@asynccontextmanager
async def _orchestra(amqp_url: str, *, answer_replays: bool) -> AsyncIterator[Orchestra]:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        if answer_replays:
            with ReplayAnswerer(amqp_url):
                yield Orchestra(channel, exchange)
        else:
            yield Orchestra(channel, exchange)
    finally:
        await connection.close()


class ReplayAnswerer:
    """Answers every replay request to the orchestrator at once, with the ReplayFinished of
    an empty log, from a thread with its own event loop.

    Its own loop, because Litestar's test client runs the app in another thread and blocks
    the test's loop while a request is handled: an answer sent from the test's loop could
    not reach a query that waits for it.
    """

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._listening = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> ReplayAnswerer:
        self._thread.start()
        if not self._listening.wait(10):
            raise AssertionError(f"the replay answerer did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            connection = await aio_pika.connect_robust(self.amqp_url)
        except BaseException as e:
            self._failure = e
            raise
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key=tag_of(ReplayRequested))

            async def answer(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with incoming.process():
                    request = decode_message(incoming.body)
                    if isinstance(request, ReplayRequested) and request.origin == "orchestrator":
                        await answer_as_an_empty_log(channel, request)

            await queue.consume(answer)
            self._listening.set()
            await self._stop.wait()


@pytest.fixture
async def orchestra(amqp_url: str) -> AsyncIterator[Orchestra]:
    """Plays the other services; answers the api's replay requests as an orchestrator with
    an empty log does, so the api's read model is whole (and what the test relays is live)."""
    async with _orchestra(amqp_url, answer_replays=True) as orchestra:
        yield orchestra


@pytest.fixture
async def silent_orchestra(amqp_url: str) -> AsyncIterator[Orchestra]:
    """Plays the other services, and leaves the api's replay requests to the test."""
    async with _orchestra(amqp_url, answer_replays=False) as orchestra:
        yield orchestra


# --- GraphQL helpers ------------------------------------------------------------------------------


async def gql(client: AsyncTestClient[Litestar], query: str, **variables: Any) -> dict[str, Any]:
    """POST a GraphQL request with the token; the JSON answer."""
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def eventually(
    client: AsyncTestClient[Litestar],
    query: str,
    until: Callable[[dict[str, Any]], bool],
    **variables: Any,
) -> dict[str, Any]:
    """Ask ``query`` until ``until`` holds for its data (the read model is eventually there)."""
    async with asyncio.timeout(10):
        while True:
            answer = await gql(client, query, **variables)
            assert "errors" not in answer, answer
            data: dict[str, Any] = answer["data"]
            if until(data):
                return data
            await asyncio.sleep(0.05)


@asynccontextmanager
async def subscription(
    client: AsyncTestClient[Litestar], query: str, **variables: Any
) -> AsyncIterator[Callable[[], Any]]:
    """A graphql-transport-ws subscription; yields a function awaiting its next message."""
    ws: WebSocketTestSession
    with await client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=AUTH
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json(timeout=5)["type"] == "connection_ack"
        ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

        async def receive() -> dict[str, Any]:
            # The test client's websocket blocks while it waits: wait in a thread, so this
            # loop stays free to publish what the subscription is waiting for.
            while True:
                message: dict[str, Any] = await anyio.to_thread.run_sync(
                    lambda: ws.receive_json(timeout=15)
                )
                if message["type"] not in {"ping", "pong"}:
                    return message

        yield receive


async def _handshake(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> None:
    session = await client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
    )
    with session as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json(timeout=5)


DEPLOYMENT_FIELDS = """
  id app repoUrl branch commit status trigger actor node attempt url error warnings
  requestedAt updatedAt
  history { status at message }
  events { sequence type at data origin position }
"""

EVERYTHING = f"""
{{
  deployments(first: 100) {{ {DEPLOYMENT_FIELDS} }}
  apps {{
    name repoUrl branch watching url
    current {{ id status }}
    latest {{ id status }}
    deployments {{ id status }}
  }}
  hello: app(name: "hello") {{ name current {{ {DEPLOYMENT_FIELDS} }} }}
}}
"""


# --- commands -------------------------------------------------------------------------------------


async def test_deploy_publishes_exactly_one_request_and_answers_requested(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    spy = await orchestra.spy(COMMAND_TAGS)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        answer = await gql(
            client,
            """mutation($input: DeployInput!) {
                 deploy(input: $input) {
                   id status repoUrl branch trigger actor app history { status }
                 }
               }""",
            input={"repoUrl": "https://git.example.com/team/hello.git", "branch": "dev"},
        )
        deployed = answer["data"]["deploy"]
        shown = await gql(
            client, "query($id: ID!) { deployment(id: $id) { id status } }", id=deployed["id"]
        )
    assert deployed["status"] == "REQUESTED"
    assert deployed["history"] == [{"status": "REQUESTED"}]
    assert (deployed["repoUrl"], deployed["branch"], deployed["trigger"], deployed["actor"]) == (
        "https://git.example.com/team/hello.git",
        "dev",
        "MANUAL",
        "admin",
    )
    assert deployed["app"] is None  # the orchestrator names the app
    assert shown["data"]["deployment"] == {"id": deployed["id"], "status": "REQUESTED"}, shown
    published = await spy.messages()
    assert len(published) == 1
    command, _ = published[0]
    assert isinstance(command, RequestDeployment)
    assert command.deployment_id == uuid.UUID(deployed["id"])
    assert (command.repo_url, command.branch, command.watch, command.actor, command.app) == (
        "https://git.example.com/team/hello.git",
        "dev",
        True,
        "admin",
        None,
    )


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "/srv/git/app",
        "ext::sh%20-c%20id",
        "https://user:hunter2@git.example.com/a/b.git",
        "https://127.0.0.1/a/b.git",
        "git://192.168.1.10/app.git",
    ],
)
async def test_a_refused_url_publishes_nothing_and_answers_the_policy_message(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra, url: str
) -> None:
    with pytest.raises(RefusedRemote) as refused:
        check_repo_url(url, resolve=_public)
    spy = await orchestra.spy(COMMAND_TAGS)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        answer = await gql(
            client,
            "mutation($url: String!) { deploy(input: {repoUrl: $url}) { id } }",
            url=url,
        )
        listed = await gql(client, "{ deployments { id } }")
    assert answer["data"] is None
    [error] = answer["errors"]
    assert error["message"] == str(refused.value)
    assert error["extensions"] == {"code": "REFUSED"}
    assert "hunter2" not in json.dumps(answer)
    assert listed["data"]["deployments"] == []
    assert await spy.messages() == []


async def test_private_remotes_are_deployable_when_the_setting_allows_them(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    spy = await orchestra.spy(COMMAND_TAGS)
    app = api(amqp_url, tmp_path, git_allow_private=True)
    async with AsyncTestClient(app=app) as client:
        answer = await gql(
            client, 'mutation { deploy(input: {repoUrl: "git://127.0.0.1/app.git"}) { status } }'
        )
    assert answer["data"]["deploy"]["status"] == "REQUESTED"
    assert len(await spy.messages()) == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "no-scheme"],
)
async def test_an_unauthorized_request_is_401_and_publishes_nothing(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra, headers: dict[str, str]
) -> None:
    spy = await orchestra.spy(COMMAND_TAGS)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        response = await client.post(
            "/graphql",
            json={"query": 'mutation { deploy(input: {repoUrl: "https://g.example/a/b"}) { id } }'},
            headers=headers,
        )
        with pytest.raises(WebSocketDisconnect):
            await _handshake(client, headers)
    assert response.status_code == 401
    assert TOKEN not in response.text
    assert await spy.messages() == []


async def test_unknown_targets_are_named_and_publish_nothing(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    spy = await orchestra.spy(COMMAND_TAGS)
    missing = str(uuid.uuid4())
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        answers = [
            await gql(client, 'mutation { redeploy(app: "ghost") { id } }'),
            await gql(client, 'mutation { stopApp(app: "ghost") { name } }'),
            await gql(
                client,
                'mutation($d: ID!) { rollback(app: "ghost", deploymentId: $d) { id } }',
                d=missing,
            ),
            await gql(client, "mutation($d: ID!) { cancelDeployment(id: $d) { id } }", d=missing),
            await gql(client, 'mutation { cancelDeployment(id: "not-a-uuid") { id } }'),
        ]
    messages = [a["errors"][0]["message"] for a in answers]
    assert messages == [
        "no app named 'ghost'",
        "no app named 'ghost'",
        "no app named 'ghost'",
        f"no deployment with id {missing}",
        "'not-a-uuid' is not a deployment id (a UUID)",
    ]
    assert [a["errors"][0]["extensions"]["code"] for a in answers[:4]] == ["NOT_FOUND"] * 4
    assert await spy.messages() == []


async def test_commands_on_known_targets_carry_the_read_models_facts(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=1000)
    spy = await orchestra.spy(COMMAND_TAGS)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await orchestra.relay(s.relayed)
        await eventually(client, "{ deployments { id } }", lambda d: len(d["deployments"]) == 5)
        redeployed = await gql(client, 'mutation { redeploy(app: "hello") { id status app } }')
        rolled = await gql(
            client,
            'mutation($d: ID!) { rollback(app: "hello", deploymentId: $d) { id trigger commit } }',
            d=str(s.first),
        )
        stopped = await gql(client, 'mutation { stopApp(app: "other") { name current { id } } }')
        cancelled = await gql(
            client, "mutation($d: ID!) { cancelDeployment(id: $d) { status } }", d=str(s.failed)
        )
    assert redeployed["data"]["redeploy"]["app"] == "hello"
    assert rolled["data"]["rollback"]["trigger"] == "ROLLBACK"
    assert stopped["data"]["stopApp"] == {"name": "other", "current": None}
    assert cancelled["errors"][0]["message"].endswith(
        "is already ERRORED; only a deployment that has not finished can be cancelled"
    )
    commands = [m for m, _ in await spy.messages()]
    assert [type(c) for c in commands] == [RequestDeployment, RollbackApp, StopApp]
    request, rollback, stop = commands
    assert isinstance(request, RequestDeployment)
    assert (request.app, request.repo_url, request.branch) == (
        "hello",
        "https://git.example.com/team/hello.git",
        "main",
    )
    assert isinstance(rollback, RollbackApp)
    assert rollback.deployment_id == s.first
    assert str(rollback.new_deployment_id) == rolled["data"]["rollback"]["id"]
    assert isinstance(stop, StopApp)
    assert stop.app == "other"


class Unrouted(Message, tag="test.unrouted.v1", frozen=True, kw_only=True):
    """A command no queue is bound to."""

    note: str = ""


async def test_a_command_no_queue_takes_is_an_error_not_a_silent_loss(amqp_url: str) -> None:
    broker = create_broker(amqp_url, app_id="test")
    async with broker:
        await broker.connect()
        with pytest.raises(
            Unavailable, match=r"no queue is bound to routing key 'test\.unrouted\.v1'"
        ):
            await RabbitCommandBus(broker).send(Unrouted())


# --- the read model -------------------------------------------------------------------------------


async def test_relayed_events_show_in_queries_with_their_history(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=2000)
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        # Out of order and twice: the relay may resend, and a replay may overlap live events.
        shuffled = [*s.relayed, *s.relayed[:7]]
        random.Random(7).shuffle(shuffled)
        await orchestra.relay(shuffled)
        await orchestra.send(
            NodeHeartbeat(
                node_id=NODE,
                hostname="node-1",
                cpu_count=4,
                mem_total_mb=4096,
                mem_free_mb=2048,
                load_avg=0.5,
                running=[s.second, s.other],
                at=datetime.now(UTC),
            )
        )
        data = await eventually(
            client,
            """query($id: ID!) {
                 deployment(id: $id) { status app commit node url history { status message } }
                 deployments { id status }
                 apps { name url watching current { id } }
                 nodes { hostname status deployments { id } }
               }""",
            lambda d: len(d["deployments"]) == 5 and d["nodes"] and d["apps"],
            id=str(s.second),
        )
    assert data["deployment"]["status"] == "RUNNING"
    assert data["deployment"]["app"] == "hello"
    assert data["deployment"]["node"] == str(NODE)
    assert data["deployment"]["url"] == "http://hello.apps.example.com"
    assert [h["status"] for h in data["deployment"]["history"]] == [
        "REQUESTED",
        "INITIALIZED",
        "SCHEDULED",
        "CLONING",
        "BUILDING",
        "STARTING",
        "RUNNING",
    ]
    assert data["deployment"]["history"][1]["message"] == "accepted as app hello"
    assert [d["id"] for d in data["deployments"]] == [
        str(i) for i in (s.cancelled, s.other, s.failed, s.second, s.first)
    ]
    assert [d["status"] for d in data["deployments"]] == [
        "CANCELLED",
        "RUNNING",
        "ERRORED",
        "RUNNING",
        "SUPERSEDED",
    ]
    assert data["apps"] == [
        {
            "name": "hello",
            "url": "http://hello.apps.example.com",
            "watching": True,
            "current": {"id": str(s.second)},
        },
        {
            "name": "other",
            "url": "http://other.apps.example.com",
            "watching": True,
            "current": {"id": str(s.other)},
        },
    ]
    assert data["nodes"] == [
        {
            "hostname": "node-1",
            "status": "READY",
            "deployments": [{"id": str(s.other)}, {"id": str(s.second)}],
        }
    ]


async def test_a_cancel_that_came_too_late_is_in_the_deployments_story(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    s = story(start=2500)
    last = max(r.position for r in s.relayed)
    refused = refused_cancel(
        last + 1, s.second, app="hello", status=DeploymentStatus.RUNNING, at=datetime.now(UTC)
    )
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await orchestra.relay([*s.relayed, refused])
        data = await eventually(
            client,
            """query($id: ID!) {
                 deployment(id: $id) { status history { status message } events { type } }
               }""",
            lambda d: (
                d["deployment"] is not None
                and d["deployment"]["events"][-1]["type"] == "deployment.cancel-refused.v1"
            ),
            id=str(s.second),
        )
    assert data["deployment"]["status"] == "RUNNING"
    assert data["deployment"]["history"][-1] == {
        "status": "RUNNING",
        "message": "cancel by alice refused: the deployment was already RUNNING when it arrived",
    }


async def test_healthz_says_rebuilding_until_the_replay_finishes(
    amqp_url: str, tmp_path: Path, silent_orchestra: Orchestra
) -> None:
    replays = await silent_orchestra.spy([tag_of(ReplayRequested)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        request = await replays.next_request()
        before = (await client.get("/healthz")).json()
        assert isinstance(request, ReplayRequested)
        await silent_orchestra.send(
            ReplayFinished(origin="orchestrator", last_position=0, at=datetime.now(UTC)),
            to=request.reply_to,
        )
        for _ in range(100):
            after = (await client.get("/healthz")).json()
            if after["readModel"]["state"] == "ready":
                break
            await asyncio.sleep(0.05)
    assert before["status"] == "ok"
    assert before["readModel"]["state"] == "rebuilding"
    assert after["readModel"]["state"] == "ready"
    assert (request.origin, request.after_position) == ("orchestrator", 0)
    assert request.reply_to.startswith("api.updates.")


async def test_a_fresh_api_rebuilds_to_identical_answers_from_a_replay(
    amqp_url: str, tmp_path: Path, silent_orchestra: Orchestra
) -> None:
    s = story(start=3000)
    replays = await silent_orchestra.spy([tag_of(ReplayRequested)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path / "a")) as first:
        # The first api starts before anything happened: its replay is of an empty log.
        request = await replays.next_request()
        await silent_orchestra.send(
            ReplayFinished(origin="orchestrator", last_position=0, at=datetime.now(UTC)),
            to=request.reply_to,
        )
        await silent_orchestra.relay(s.relayed)
        await eventually(first, "{ deployments { id } }", lambda d: len(d["deployments"]) == 5)
        # Wait for the last events too: every deployment in its final status.
        await eventually(
            first,
            "{ deployments { status } }",
            lambda d: (
                [x["status"] for x in d["deployments"]]
                == ["CANCELLED", "RUNNING", "ERRORED", "RUNNING", "SUPERSEDED"]
            ),
        )
        expected = await gql(first, EVERYTHING)

    fresh_api = api(amqp_url, tmp_path / "b", read_model_wait_seconds=0.2)
    async with AsyncTestClient(app=fresh_api) as fresh:
        request = await replays.next_request()
        assert isinstance(request, ReplayRequested)
        # Before its replay, the fresh api says so instead of answering empty lists.
        early = await gql(fresh, "{ deployments { id } apps { name } }")
        assert early["data"] is None
        assert {e["extensions"]["code"] for e in early["errors"]} == {"REBUILDING"}
        assert "the read model is being rebuilt" in early["errors"][0]["message"]
        # The replay, out of order and overlapping with the same events arriving live.
        replayed = list(s.relayed)
        random.Random(3).shuffle(replayed)
        await silent_orchestra.relay(replayed[: len(replayed) // 2], to=request.reply_to)
        await silent_orchestra.relay(s.relayed[-6:])  # live
        await silent_orchestra.relay(replayed[len(replayed) // 2 :], to=request.reply_to)
        await silent_orchestra.send(
            ReplayFinished(
                origin="orchestrator",
                last_position=max(r.position for r in s.relayed),
                at=datetime.now(UTC),
            ),
            to=request.reply_to,
        )
        for _ in range(200):
            health = (await fresh.get("/healthz")).json()["readModel"]
            if health["state"] == "ready":
                break
            await asyncio.sleep(0.05)
        # Deliveries are handled concurrently: give the last ones a moment after "ready".
        for _ in range(40):
            rebuilt = await gql(fresh, EVERYTHING)
            if rebuilt == expected:
                break
            await asyncio.sleep(0.05)
    assert health["state"] == "ready"
    assert health["lastPosition"] == max(r.position for r in s.relayed)
    assert rebuilt == expected
    assert len(expected["data"]["deployments"]) == 5


# --- subscriptions --------------------------------------------------------------------------------


async def test_deployment_updates_yield_each_status_change_and_end_at_terminal(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    commands = await orchestra.spy([tag_of(RequestDeployment)])
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        answer = await gql(
            client,
            'mutation { deploy(input: {repoUrl: "https://git.example.com/team/app.git"}) { id } }',
        )
        deployment_id = uuid.UUID(answer["data"]["deploy"]["id"])
        request, _ = await commands.next()
        assert isinstance(request, RequestDeployment)
        # Play the orchestrator: its events for this request, as its relay publishes them.
        _, relayed = deployment(
            Log(start=4000),
            app="app",
            repo_url=request.repo_url,
            deployment_id=deployment_id,
            outcome=S.ERRORED,
        )
        query = "subscription($id: ID!) { deploymentUpdates(id: $id) { status error } }"
        async with subscription(client, query, id=str(deployment_id)) as receive:
            first = await receive()  # REQUESTED, as the mutation answered
            statuses = [first["payload"]["data"]["deploymentUpdates"]["status"]]
            for item in relayed:
                await orchestra.relay([item])
                if isinstance(item.message, DeploymentRequested):
                    continue  # REQUESTED again: not a change
                message = await receive()
                update = message["payload"]["data"]["deploymentUpdates"]
                statuses.append(update["status"])
            done = await receive()
    assert statuses == ["REQUESTED", "INITIALIZED", "SCHEDULED", "CLONING", "BUILDING", "ERRORED"]
    assert update["error"] == "pip install failed: no matching distribution for flask==99"
    assert done == {"id": "1", "type": "complete"}


async def test_every_subscriber_gets_every_update(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    d, relayed = deployment(Log(start=5000), app="fan", outcome=S.CANCELLED)
    query = "subscription($id: ID!) { deploymentUpdates(id: $id) { status } }"
    async with AsyncTestClient(app=api(amqp_url, tmp_path)) as client:
        await orchestra.relay(relayed[:1])
        await eventually(client, "{ deployments { id } }", lambda x: len(x["deployments"]) == 1)
        async with (
            subscription(client, query, id=str(d)) as one,
            subscription(client, query, id=str(d)) as two,
        ):
            assert (await one())["payload"]["data"]["deploymentUpdates"]["status"] == "REQUESTED"
            assert (await two())["payload"]["data"]["deploymentUpdates"]["status"] == "REQUESTED"
            await orchestra.relay(relayed[1:])
            seen = [
                [(await receive())["payload"]["data"]["deploymentUpdates"]["status"] for _ in "ab"]
                for receive in (one, two)
            ]
    assert seen == [["INITIALIZED", "CANCELLED"], ["INITIALIZED", "CANCELLED"]]


async def test_deployment_logs_give_lines_so_far_then_live_ones(
    amqp_url: str, tmp_path: Path, orchestra: Orchestra
) -> None:
    d, relayed = deployment(Log(start=6000), app="logs", outcome=S.ERRORED)

    def line(n: int) -> LogLine:
        return LogLine(
            deployment_id=d,
            stream=LogStream.BUILD,
            sequence=n,
            text=f"step {n}",
            at=datetime.now(UTC),
        )

    app = api(amqp_url, tmp_path)
    query = (
        "subscription($id: ID!) { deploymentLogs(id: $id) { deploymentId sequence text stream } }"
    )
    async with AsyncTestClient(app=app) as client:
        await orchestra.relay(relayed[:-1])
        await orchestra.send(line(0))
        await orchestra.send(line(1))
        await eventually(
            client,
            "{ deployments { status } }",
            lambda x: x["deployments"][0]["status"] == "BUILDING",
        )
        async with subscription(client, query, id=str(d)) as receive:
            texts = [(await receive())["payload"]["data"]["deploymentLogs"]["text"] for _ in "ab"]
            await orchestra.send(line(2))
            texts.append((await receive())["payload"]["data"]["deploymentLogs"]["text"])
            await orchestra.relay(relayed[-1:])  # ERRORED: the stream ends soon after
            done = await receive()
    assert texts == ["step 0", "step 1", "step 2"]
    assert done["type"] == "complete"
