"""The fault suite: deployments across two nodes while services are SIGKILLed and
restarted, the broker and the database restart, and one node dies for good.

Everything is real and is its own process: the five services, RabbitMQ and PostgreSQL
(private instances, see ``conftest``), Docker, Caddy and a git daemon on loopback. At the
end the platform must have healed: every deployment terminal, every app meant to run
served by exactly one container through its route, read models rebuilt from scratch equal
to the live ones, only the injected poison in the dead-letter queue, and the stored events
telling the same story as the read models.

Scale and pace come from the environment (``just faults`` runs the full size):
``FAULTS_DEPLOYMENTS`` (100), ``FAULTS_APPS`` (20), ``FAULTS_KILL_EVERY`` seconds (5),
``FAULTS_SEED``. The figures are printed as one JSON line and appended to
``.benchmarks/faults.jsonl``; docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import docker
import httpx
import pytest
from docker.models.containers import Container

from tests.e2e.test_deploy_git_url import TERMINAL, node_settings
from tests.support.gitdaemon import GitServer, free_port
from tests.support.node_infra import stop_node_proxy
from tests.support.platform import ROOT, Platform
from tests.support.private_infra import PrivatePostgres, PrivateRabbit

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow, pytest.mark.faults]

TOKEN = "faults-token"
DEPLOYMENTS = int(os.environ.get("FAULTS_DEPLOYMENTS", "100"))
APPS = int(os.environ.get("FAULTS_APPS", "20"))
KILL_EVERY = float(os.environ.get("FAULTS_KILL_EVERY", "5"))
SEED = int(os.environ.get("FAULTS_SEED", "20261127"))
POISON = 3
# The nodes' last removals: drain (2 s) and graceful stop (SHIPWRECK_STOP_TIMEOUT_SECONDS,
# 10 s) of the deployments superseded last, with room for a loaded Docker engine.
CONTAINERS_SETTLE = 60.0

DEPLOYMENT = "id app status commit node error trigger history { status message at }"
READ_MODEL = (
    "{ deployments(first: 10000) { " + DEPLOYMENT + " requestedAt repoUrl branch } "
    "apps { name repoUrl branch watching url current { id } } }"
)

# Short stage timeouts: a deployment whose work was lost must end quickly, not in 20 min.
ORCHESTRATOR_ENV = {
    "SHIPWRECK_TIMEOUT_INITIALIZED_SECONDS": "60",
    "SHIPWRECK_TIMEOUT_SCHEDULED_SECONDS": "60",
    "SHIPWRECK_TIMEOUT_CLONING_SECONDS": "90",
    "SHIPWRECK_TIMEOUT_BUILDING_SECONDS": "180",
    "SHIPWRECK_TIMEOUT_TESTING_SECONDS": "90",
    "SHIPWRECK_TIMEOUT_STARTING_SECONDS": "90",
}


class ApiGone(Exception):
    """The api did not answer in time (it may be down: the caller retries)."""


@dataclass
class Api:
    """A GraphQL client that rides out the api's restarts."""

    port: int
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=30,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    def gql(self, query: str, *, patience: float = 180, **variables: Any) -> dict[str, Any]:
        deadline = time.monotonic() + patience
        last = ""
        while time.monotonic() < deadline:
            try:
                response = self.client.post(
                    "/graphql", json={"query": query, "variables": variables}
                )
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.5)
                continue
            if response.status_code != 200:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                time.sleep(0.5)
                continue
            body = response.json()
            errors = body.get("errors") or []
            if errors and all(_code(e) == "UNAVAILABLE" for e in errors):
                last = str(errors)  # RabbitMQ restarting: the api said to try again
                time.sleep(0.5)
                continue
            assert not errors, errors
            data: dict[str, Any] = body["data"]
            return data
        raise ApiGone(last)


def _code(error: dict[str, Any]) -> str | None:
    code = (error.get("extensions") or {}).get("code")
    return str(code) if code else None


@dataclass
class Service:
    name: str
    module: str
    ready: str
    env: dict[str, str]


@dataclass
class Chaos:
    """Starts the services, and kills and restarts them on purpose."""

    platform: Platform
    rabbit: PrivateRabbit
    postgres: PrivatePostgres
    services: dict[str, Service] = field(default_factory=dict)
    dead_for_good: set[str] = field(default_factory=set)
    kills: list[dict[str, Any]] = field(default_factory=list)
    infra_restarts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, module: str, ready: str, **env: str) -> None:
        self.services[name] = Service(name, module, ready, env)
        self.start(name)

    def start(self, name: str, patience: float = 240) -> float:
        """Start ``name`` until it says it is ready (a supervisor's restart=always: a
        service that cannot start while the database is down is started again)."""
        service = self.services[name]
        began = time.monotonic()
        while True:
            try:
                self.platform.start(name, service.module, service.ready, timeout=90, **service.env)
                return time.monotonic() - began
            except AssertionError:
                self.platform.processes.pop(name, None)
                if time.monotonic() - began > patience:
                    raise
                time.sleep(1)

    def kill(self, name: str) -> None:
        process = self.platform.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def kill_and_restart(self, name: str) -> None:
        with self.lock:
            killed_at = time.monotonic()
            self.kill(name)
            self.start(name)
            self.kills.append(
                {"service": name, "recovery_s": round(time.monotonic() - killed_at, 2)}
            )

    def restart_rabbit(self, down: float) -> None:
        with self.lock:
            began = time.monotonic()
            self.rabbit.restart(down)
            self.infra_restarts.append(
                {"server": "rabbitmq", "down_s": round(time.monotonic() - began, 2)}
            )

    def restart_postgres(self, down: float, while_down: Callable[[], None]) -> None:
        """Crash PostgreSQL, run ``while_down``, and start it again after ``down`` s."""
        with self.lock:
            began = time.monotonic()
            self.postgres.stop("immediate")
            try:
                while_down()
                time.sleep(max(0.0, down - (time.monotonic() - began)))
            finally:
                self.postgres.start()
            self.infra_restarts.append(
                {"server": "postgresql", "down_s": round(time.monotonic() - began, 2)}
            )

    def alive(self) -> list[str]:
        return [n for n in self.services if n not in self.dead_for_good]

    def ensure_all_running(self) -> None:
        for name in self.alive():
            process = self.platform.processes.get(name)
            if process is None or process.poll() is not None:
                self.platform.processes.pop(name, None)
                self.start(name)


def _node_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"node.shipwreck/{name}"))


def _get(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError as e:
        return 0, f"{type(e).__name__}: {e}"
    finally:
        connection.close()


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if predicate():
            return time.monotonic() - began
        time.sleep(1)
    raise AssertionError(f"{what} within {seconds}s")


def _holds(predicate: Callable[[], bool], seconds: float) -> bool:
    """Whether ``predicate`` comes to hold within ``seconds`` (the caller reports what does
    not hold then)."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > seconds:
            return False
        time.sleep(0.5)
    return True


def _app_containers(node_ids: Collection[str], apps: Collection[str]) -> dict[str, list[str]]:
    """For each of ``apps``: the deployments whose app containers run on these nodes."""
    client = docker.from_env()
    try:
        # ignore_removed: a container may go between the listing and its inspection.
        running = client.containers.list(ignore_removed=True)
    finally:
        client.close()
    mine = [
        c.labels
        for c in running
        if c.labels.get("org.shipwreck.node") in node_ids
        and c.labels.get("org.shipwreck.role", "app") == "app"
    ]
    return {
        app: [
            labels.get("org.shipwreck.deployment", "")
            for labels in mine
            if labels.get("org.shipwreck.app") == app
        ]
        for app in apps
    }


async def _publish_poison(amqp_url: str) -> list[str]:
    """Messages no consumer can decode, routed to the orchestrator's command queue."""
    ids = [f"poison-{i}" for i in range(POISON)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("shipwreck")
        for message_id in ids:
            await exchange.publish(
                aio_pika.Message(
                    b'{"type": "deployment.request.v1", "repo_url": 42',
                    message_id=message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="deployment.request.v1",
                mandatory=True,
            )
    return ids


async def _dead_letters(amqp_url: str) -> list[str]:
    """The message ids in the dead-letter queue (read, then put back)."""
    connection = await aio_pika.connect(amqp_url)
    seen: list[str] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("shipwreck.dead-letters")
        held = []
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            seen.append(message.message_id or f"(no id) {message.body[:80]!r}")
            held.append(message)
        for message in held:
            await message.nack(requeue=True)
    return seen


def _stored_story(database_url: str) -> dict[str, list[str]]:
    """Every deployment's statuses, replayed from the orchestrator's stored events."""
    from shipwreck_eventstore.config import StoreConfig
    from shipwreck_orchestrator.domain import Deployment
    from shipwreck_orchestrator.service import Orchestrator

    app = Orchestrator(StoreConfig(database_url=database_url))
    try:
        ids: set[uuid.UUID] = {  # every Deployment aggregate in the log
            uuid.UUID(str(n.originator_id))
            for n in app.all_notifications()
            if n.topic.startswith(f"{Deployment.__module__}:Deployment.")
        }
        story: dict[str, list[str]] = {}
        for deployment_id in ids:
            final: Deployment = app.repository.get(deployment_id)
            statuses: list[str] = []
            for version in range(1, final.version + 1):
                statuses.append(str(app.repository.get(deployment_id, version=version).status))
            story[str(deployment_id)] = _changes(statuses)
        return story
    finally:
        app.close()


def test_the_platform_heals_from_kills_restarts_and_a_lost_node(
    faulty_platform: Platform,
    rabbit: PrivateRabbit,
    postgres: PrivatePostgres,
    git_server: GitServer,
    request: pytest.FixtureRequest,
) -> None:
    platform = faulty_platform
    rng = random.Random(SEED)
    chaos = Chaos(platform, rabbit, postgres)
    api_port = free_port()
    nodes = {name: node_settings(platform, f"faults-{name}") for name in ("node-a", "node-b")}
    # A SIGKILLed node leaves its Caddy running (by design: the apps stay reachable while
    # the node restarts); the suite's must not outlive it.
    request.addfinalizer(lambda: _stop_proxies(nodes.values()))
    proxy_port = {
        _node_id(f"faults-{n}"): int(s["SHIPWRECK_PROXY_HTTP_PORT"]) for n, s in nodes.items()
    }
    chaos.add("scheduler", "shipwreck_scheduler", "scheduler ready")
    chaos.add("orchestrator", "shipwreck_orchestrator", "orchestrator ready", **ORCHESTRATOR_ENV)
    # Polling out of the way: every deployment here is asked for explicitly, so the count
    # is the suite's own. The watcher is still killed and restarted with the rest.
    chaos.add("watcher", "shipwreck_watcher", "watcher ready", SHIPWRECK_WATCH_INTERVAL="3600")
    for name, settings in nodes.items():
        chaos.add(name, "shipwreck_node", "node ready", **settings)
    chaos.add(
        "api",
        "shipwreck_api",
        "api ready",
        SHIPWRECK_API_PORT=str(api_port),
        SHIPWRECK_API_TOKEN=TOKEN,
    )
    api = Api(api_port)
    _wait(lambda: len(api.gql("{ nodes { id } }")["nodes"]) >= 2, 60, "two nodes registered")
    poison = asyncio.run(_publish_poison(platform.amqp_url))

    apps = [f"f{i:02d}" for i in range(APPS)]
    versions: dict[str, str] = {}  # commit -> the body its app answers with
    submitted = 0
    submitting = threading.Event()
    submitting.set()
    failures: list[BaseException] = []

    def submit() -> None:
        nonlocal submitted
        try:
            for n in range(DEPLOYMENTS):
                app = apps[n % len(apps)]
                body = f"{app} v{n // len(apps)}\n"
                commit = git_server.publish_app(app, "python-version", overrides={"VERSION": body})
                versions[commit] = body
                api.gql(
                    "mutation($url: String!) { deploy(input: {repoUrl: $url}) { id } }",
                    url=git_server.url(app),
                )
                submitted += 1
                time.sleep(rng.uniform(0.5, 2.0))
        except BaseException as e:  # reported by the main thread
            failures.append(e)
        finally:
            submitting.clear()

    node_loss: dict[str, datetime] = {}
    down_reads: list[dict[str, Any]] = []

    def lose_node_b() -> None:
        """node-b's machine dies: its process, its containers and its Caddy go for good."""
        with chaos.lock:
            chaos.dead_for_good.add("node-b")
            lost_at = datetime.now(UTC)
            chaos.kill("node-b")
            client = docker.from_env()
            try:
                for container in client.containers.list(
                    all=True,
                    sparse=True,  # no inspect per container: one may vanish meanwhile
                    filters={"label": f"org.shipwreck.node={_node_id('faults-node-b')}"},
                ):
                    _remove_gone(container)
            finally:
                client.close()
            stop_node_proxy(nodes["node-b"])
        node_loss["lost_at"] = lost_at

    def read_while_the_database_is_down() -> None:
        # The api answers from its read model: no query needs PostgreSQL.
        began = time.monotonic()
        answer = api.gql("{ apps { name current { id status } } nodes { id } }", patience=10)
        down_reads.append(
            {"apps": len(answer["apps"]), "answered_s": round(time.monotonic() - began, 3)}
        )

    def unleash() -> None:
        done_rabbit = done_postgres = done_node = False
        while submitting.is_set():
            time.sleep(KILL_EVERY)
            progress = submitted / DEPLOYMENTS
            if not done_rabbit and progress >= 0.25:
                done_rabbit = True
                chaos.restart_rabbit(down=3)
                continue
            if not done_node and progress >= 0.8:
                done_node = True
                lose_node_b()
                continue
            if not done_postgres and progress >= 0.55:
                done_postgres = True
                chaos.restart_postgres(down=3, while_down=read_while_the_database_is_down)
                continue
            victim = rng.choice(chaos.alive())
            chaos.kill_and_restart(victim)

    driver = threading.Thread(target=submit, daemon=True)
    monkey = threading.Thread(target=lambda: _guard(unleash, failures), daemon=True)
    started = time.monotonic()
    driver.start()
    monkey.start()
    driver.join()
    monkey.join()
    assert not failures, failures
    chaos.ensure_all_running()
    assert node_loss, "the run was too short to lose node-b"
    assert len(down_reads) == 1, "the api did not answer while PostgreSQL was down"

    node_b = _node_id("faults-node-b")

    # 1. Every deployment ends; none is stuck in progress. node-b's deployments look RUNNING
    # until the scheduler declares it lost (SHIPWRECK_NODE_TIMEOUT_SECONDS after its last
    # heartbeat) and the orchestrator places them again: a run whose submissions end sooner
    # than that (a fast machine) must wait for it before judging.
    def all_terminal() -> bool:
        listed = api.gql("{ deployments(first: 10000) { id status node } }")["deployments"]
        return (
            len(listed) >= DEPLOYMENTS
            and all(d["status"] in TERMINAL for d in listed)
            and not any(d["status"] == "RUNNING" and d["node"] == node_b for d in listed)
        )

    _wait(all_terminal, 600, "every deployment terminal, none running on the dead node-b")
    settled = time.monotonic()
    live = api.gql(READ_MODEL)
    deployments = live["deployments"]
    by_id = {d["id"]: d for d in deployments}

    # The remaining checks all run, so one failure shows everything that went wrong.
    problems: list[str] = []

    # 2. Every app meant to run is served by exactly one container, through its route.
    # A deployment is SUPERSEDED (terminal) the moment its successor serves, but its node
    # removes its container only after the drain (SHIPWRECK_DRAIN_SECONDS) and a graceful
    # stop: the apps redeployed last still run their old container for a few seconds.
    # What counts is where the nodes end up.
    def meant(app: dict[str, Any]) -> list[str]:
        current = app["current"] and by_id[app["current"]["id"]]
        running = current and current["status"] == "RUNNING" and current["node"] != node_b
        return [current["id"]] if running else []

    wanted = {app["name"]: meant(app) for app in live["apps"]}
    seen: dict[str, list[str]] = {}

    def only_wanted_run() -> bool:
        seen.clear()
        seen.update(_app_containers(platform.node_ids, wanted))
        return seen == wanted

    _holds(only_wanted_run, CONTAINERS_SETTLE)
    containers_settled = time.monotonic()
    client = docker.from_env()
    try:
        # What ran at the end, for reading after a failure.
        (platform.state_dir / "containers.txt").write_text(
            "".join(
                f"{c.name} {c.status} {c.attrs.get('Created')} {json.dumps(c.labels)}\n"
                for c in client.containers.list(all=True, ignore_removed=True)
            )
        )
    finally:
        client.close()
    served = 0
    for app in live["apps"]:
        name = app["name"]
        current = app["current"] and by_id[app["current"]["id"]]
        mine = seen[name]
        if not current or current["status"] != "RUNNING":
            if mine:
                problems.append(f"{name} is not meant to run, yet containers run: {mine}")
            continue
        if current["node"] == node_b:
            problems.append(f"{name}: its current deployment is on the dead node-b: {current}")
            continue
        if mine != [current["id"]]:
            problems.append(f"{name}: containers {mine}, expected only {current['id']}")
        answer = _get(proxy_port[current["node"]], f"{name}.localhost")
        if answer != (200, versions[current["commit"]]):
            problems.append(f"{name}: its route answers {answer}, expected {current}")
        else:
            served += 1
    if served < len(apps) // 2:
        problems.append(f"only {served} of {len(apps)} apps are served at the end")

    # 3. Read models rebuilt from scratch equal the live ones: a fresh api, and a rebuild.
    chaos.add(
        "api-fresh",
        "shipwreck_api",
        "api ready",
        SHIPWRECK_API_PORT=str(fresh_port := free_port()),
        SHIPWRECK_API_TOKEN=TOKEN,
    )
    fresh = Api(fresh_port)
    try:
        _wait(lambda: fresh.gql(READ_MODEL) == live, 60, "a fresh api answering as the live one")
    except AssertionError:
        problems.extend(_differences("fresh api", live, fresh.gql(READ_MODEL)))
    rebuilt = api.gql("mutation { rebuildReadModel { complete } }")["rebuildReadModel"]
    if not rebuilt["complete"]:
        problems.append("rebuildReadModel did not complete")
    problems.extend(_differences("rebuilt read model", live, api.gql(READ_MODEL)))

    # 4. The dead-letter queue holds only the injected poison.
    dead = sorted(asyncio.run(_dead_letters(platform.amqp_url)))
    if dead != sorted(poison):
        problems.append(f"dead letters {dead}, expected only the poison {sorted(poison)}")

    # 5. The stored events, replayed, tell the read models' story: no gap, no duplicate.
    story = _stored_story(platform.database_url)
    if set(story) != set(by_id):
        problems.append(
            f"deployments only in the store: {sorted(set(story) - set(by_id))}; "
            f"only in the read model: {sorted(set(by_id) - set(story))}"
        )
    for deployment_id, statuses in story.items():
        if deployment_id not in by_id:
            continue
        history = _changes([h["status"] for h in by_id[deployment_id]["history"]])
        if history != statuses:
            problems.append(f"{deployment_id}: read model {history}, stored events {statuses}")

    # The figures.
    figures = {
        "bench": "faults",
        "deployments": len(deployments),
        "submitted": submitted,
        "apps": len(apps),
        "apps_running_at_end": served,
        "statuses": {s: sum(d["status"] == s for d in deployments) for s in sorted(TERMINAL)},
        "errors": dict(
            collections.Counter(
                (d["error"] or "")[:90] for d in deployments if d["status"] == "ERRORED"
            ).most_common()
        ),
        "kills": len(chaos.kills),
        "kills_by_service": {
            n: sum(k["service"] == n for k in chaos.kills) for n in sorted(chaos.services)
        },
        "longest_recovery_s": max((k["recovery_s"] for k in chaos.kills), default=0),
        "infra_restarts": chaos.infra_restarts,
        "api_read_while_postgres_down": down_reads,
        "run_s": round(settled - started, 1),
        # From every deployment terminal to only the current ones' containers running.
        "containers_settle_s": round(containers_settled - settled, 1),
        "seed": SEED,
    }
    figures.update(_reschedule_figures(deployments, node_loss["lost_at"]))
    line = json.dumps(figures)
    print(line)
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    with (out / "faults.jsonl").open("a") as f:
        f.write(line + "\n")
    assert not problems, "\n".join(problems)


def _remove_gone(container: Container) -> None:
    """Remove a container of the lost node, unless it is gone or already going: a build
    that the kill cut short has its intermediate containers (which carry the node's label)
    removed by Docker itself meanwhile, and a second removal then gets 409."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if e.status_code != 409 or "already in progress" not in str(e.explanation):
            raise


def _stop_proxies(nodes: Iterable[dict[str, str]]) -> None:
    for settings in nodes:
        stop_node_proxy(settings)


def _guard(target: Callable[[], None], failures: list[BaseException]) -> None:
    try:
        target()
    except BaseException as e:
        failures.append(e)


def _differences(what: str, live: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Field-by-field differences between two READ_MODEL answers."""
    if other == live:
        return []
    found: list[str] = []
    for key in ("deployments", "apps"):
        mine = {d.get("id") or d.get("name"): d for d in live[key]}
        theirs = {d.get("id") or d.get("name"): d for d in other[key]}
        for k in sorted(set(mine) | set(theirs)):
            if mine.get(k) != theirs.get(k):
                found.append(f"{what}: {key} {k}: live {mine.get(k)} != {theirs.get(k)}")
    return found or [f"{what}: answers differ in order"]


def _changes(statuses: list[str]) -> list[str]:
    """The statuses one after another, a repeated one once (two events may keep a status)."""
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def _reschedule_figures(deployments: list[dict[str, Any]], lost_at: datetime) -> dict[str, Any]:
    """How long after node-b died its deployments were placed again and ran elsewhere.

    A deployment placed again after a node loss goes back to INITIALIZED: the second
    INITIALIZED of its history (after node-b died) marks the move.
    """
    noticed: list[float] = []
    running: list[float] = []
    for d in deployments:
        history = d["history"]
        moves = [
            i
            for i, h in enumerate(history)
            if h["status"] == "INITIALIZED" and i > 1 and datetime.fromisoformat(h["at"]) >= lost_at
        ]
        if not moves:
            continue
        seen = datetime.fromisoformat(history[moves[0]]["at"])
        noticed.append((seen - lost_at).total_seconds())
        again = [h for h in history[moves[0] :] if h["status"] == "RUNNING"]
        if again:
            running.append((datetime.fromisoformat(again[0]["at"]) - lost_at).total_seconds())
    return {
        "placed_again_after_node_loss": len(noticed),
        "node_loss_noticed_s": round(max(noticed), 1) if noticed else None,
        "running_again_elsewhere": len(running),
        "longest_loss_to_running_s": round(max(running), 1) if running else None,
        "loss_to_running_s": sorted(round(r, 1) for r in running),
    }
