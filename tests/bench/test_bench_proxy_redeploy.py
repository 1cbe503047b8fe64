"""Requests through the proxy during redeploys: 200 requests/s, five new versions, a rollback.

The whole platform runs as processes (scheduler, orchestrator, api and a real node with its
own Caddy, on Docker with the local base images), so each switch happens as in production:
the node builds and health-checks the new container beside the old one, moves the route by
a change of its DNS record (no Caddy config change) and reports success; the orchestrator
then supersedes the old deployment, and the node stops it after draining. A load generator
in its own process (``tests.support.loadgen``: open loop, keep-alive connections) requests
the app through Caddy at a fixed rate from before the first redeploy to after the rollback.

A switch runs from the redeploy (or rollback) request until the superseded container has
stopped, plus a second (the build takes most of it); its cut-over from a second before the
first answer of the new version until then (the route change, the drain, the old stop).
Scaled with ``BENCH_PROXY_RATE`` and ``BENCH_PROXY_REDEPLOYS``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker

from shipwreck_node.ports import LABEL_DEPLOYMENT
from tests.e2e.test_deploy_git_url import Api, node_settings, start_api, wait_for_nodes
from tests.support.gitdaemon import FileContent, GitServer
from tests.support.loadgen import Record
from tests.support.node_infra import get, remove_node_leftovers
from tests.support.platform import ROOT, Platform

# The python-version fixture, served the way production servers serve: a listen backlog of
# 2048 (gunicorn's and uvicorn's default) and keep-alive without Nagle's delay. http.server's
# backlog of 5 overflows at 200 new connections/s on a busy machine, and each dropped SYN
# costs its request a one-second retransmission, whatever the platform does.
APP = b"""\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path(__file__).with_name("VERSION").read_bytes()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = b"ok" if self.path == "/health" else VERSION
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 2048
    daemon_threads = True


if __name__ == "__main__":
    Server(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
"""

REDEPLOY = "mutation($app: String!) { redeploy(app: $app) { id } }"
ROLLBACK = "mutation($app: String!, $id: ID!) { rollback(app: $app, deploymentId: $id) { id } }"
RATE = float(os.environ.get("BENCH_PROXY_RATE", "200"))
REDEPLOYS = int(os.environ.get("BENCH_PROXY_REDEPLOYS", "5"))
CONNECTIONS = 8
RESULTS = ROOT / ".benchmarks" / "proxy_redeploy.jsonl"


@dataclass
class Switch:
    """One redeploy or rollback, as the bench saw it (monotonic seconds)."""

    name: str
    requested: float
    running: float
    old_stopped: float
    version: str

    @property
    def window(self) -> tuple[float, float]:
        return self.requested, self.old_stopped + 1.0


def test_no_failed_request_through_the_proxy_during_redeploys_and_a_rollback(
    platform: Platform, git_server: GitServer, tmp_path: Path
) -> None:
    load_before = os.getloadavg()
    node = node_settings(platform, f"bench-proxy-{uuid.uuid4().hex[:6]}")
    platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
    platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
    platform.start("node", "shipwreck_node", "node ready", **node)
    port = int(node["SHIPWRECK_PROXY_HTTP_PORT"])
    api = start_api(platform)
    engine = docker.from_env()
    try:
        wait_for_nodes(api, 1)
        repo = f"bench-{uuid.uuid4().hex[:6]}"
        git_server.publish_app(repo, "python-version", overrides=_variant("v1"))
        first = _running(api, api.deploy(git_server.url(repo)))
        app, url = str(first["app"]), str(first["url"])
        assert get(port, url) == (200, "v1\n")

        out = tmp_path / "requests.json"
        generator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.loadgen",
                f"--port={port}",
                f"--host={urlsplit(url).netloc}",
                f"--rate={RATE:g}",
                f"--connections={CONNECTIONS}",
                f"--out={out}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert generator.stdout is not None
            assert generator.stdout.readline().strip() == "ready"
            started = time.monotonic()
            time.sleep(3)  # a steady state before the first switch
            switches = Switches(api, engine)
            deployed = [first]
            for n in range(2, REDEPLOYS + 2):
                version = f"v{n}"
                git_server.publish_app(repo, "python-version", overrides=_variant(version))
                requested = time.monotonic()
                new_id = api.gql(REDEPLOY, app=app)["redeploy"]["id"]
                deployed.append(switches.wait("redeploy", version, requested, new_id, deployed[-1]))
            # Back to the version before the last: the earlier image runs again, no build.
            requested = time.monotonic()
            back_id = api.gql(ROLLBACK, app=app, id=deployed[-2]["id"])["rollback"]["id"]
            switches.wait("rollback", f"v{REDEPLOYS}", requested, back_id, deployed[-1])
            time.sleep(3)  # a steady state after the last switch
            stopped = time.monotonic()
        finally:
            generator.send_signal(signal.SIGTERM)
            generator.wait(60)
        generated = json.loads(out.read_text())
        records: list[Record] = [
            (float(due), float(sent), float(done), int(status), str(kind), str(body), str(retried))
            for due, sent, done, status, kind, body, retried in generated["requests"]
        ]
    finally:
        api.client.close()
        platform.stop_all()
        for node_id in platform.node_ids:
            remove_node_leftovers(engine, node_id)
        engine.close()

    figures = _figures(records, switches.done, started, stopped)
    record = {
        "benchmark": "proxy_redeploy",
        "rate_target": RATE,
        "connections": CONNECTIONS,
        "redeploys": REDEPLOYS,
        "rollbacks": 1,
        **figures,
        # Caddy closes idle keep-alive connections when it applies a config change (no
        # longer on a switch, which is in DNS); the generator, like any careful client, does
        # not reuse a closed one and opens another.
        "connections_opened": generated["connections_opened"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    # The switches happened as asked (the figures above are the benchmark's answer).
    served = figures["versions_served"]
    assert served[0] == "v1", served
    assert served[-1] == f"v{REDEPLOYS}", served
    assert f"v{REDEPLOYS + 1}" in served, served


def _variant(version: str) -> dict[str, FileContent]:
    return {"VERSION": f"{version}\n", "app.py": APP}


def _running(api: Api, deployment_id: str) -> dict[str, Any]:
    deployment = api.wait_terminal(deployment_id)
    assert deployment["status"] == "RUNNING", deployment
    return deployment


class Switches:
    """Waits out each switch and notes when its steps happened."""

    def __init__(self, api: Api, engine: docker.DockerClient) -> None:
        self.api = api
        self.engine = engine
        self.done: list[Switch] = []

    def wait(
        self, kind: str, version: str, requested: float, new_id: str, old: dict[str, Any]
    ) -> dict[str, Any]:
        """Wait for deployment ``new_id`` (``version``) to run and ``old`` to stop."""
        name = f"{kind} to {version}"
        new = _running(self.api, str(new_id))
        running = time.monotonic()
        label = f"{LABEL_DEPLOYMENT}={old['id']}"
        deadline = running + 60
        while self.engine.containers.list(filters={"label": label}):
            assert time.monotonic() < deadline, f"{name}: the superseded container still runs"
            time.sleep(0.1)
        self.done.append(Switch(name, requested, running, time.monotonic(), version))
        return new


def _ms(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 1) if values else 0.0


def _latency(records: list[Record]) -> dict[str, float]:
    times = sorted(r[2] - r[0] for r in records)
    return {"p50_ms": _ms(times, 0.5), "p99_ms": _ms(times, 0.99), "max_ms": _ms(times, 1.0)}


def _figures(
    records: list[Record], switches: list[Switch], started: float, stopped: float
) -> dict[str, Any]:
    records.sort()
    first_sent, last_sent = min(r[1] for r in records), max(r[1] for r in records)
    last_done = max(r[2] for r in records)
    failures = [r for r in records if r[3] != 200]
    retried = [r for r in records if r[6]]
    served: list[str] = []
    for r in records:
        if r[3] == 200 and (not served or served[-1] != r[5].strip()):
            served.append(r[5].strip())
    per_switch = []
    # A switch's window ends a second after its old container stopped, so it can overlap the
    # next one's: a request counts once.
    in_switch: dict[float, Record] = {}
    in_cutover: dict[float, Record] = {}
    for s in switches:
        a, b = s.window
        inside = [r for r in records if a <= r[0] <= b]
        # The cut-over: from a second before the first answer of the new version (the route
        # change) until a second after the superseded container stopped (drain included).
        first_new = min(
            (r[0] for r in inside if r[3] == 200 and r[5].strip() == s.version), default=b
        )
        cutover = [r for r in inside if first_new - 1.0 <= r[0]]
        in_switch.update((r[0], r) for r in inside)
        in_cutover.update((r[0], r) for r in cutover)
        per_switch.append(
            {
                "switch": s.name,
                "request_to_running_s": round(s.running - s.requested, 1),
                "request_to_cutover_s": round(first_new - s.requested, 1),
                "window_s": round(b - a, 1),
                "requests": len(inside),
                "failures": sum(1 for r in inside if r[3] != 200),
                "retried": sum(1 for r in inside if r[6]),
                "cutover_requests": len(cutover),
                **{f"cutover_{k}": v for k, v in _latency(cutover).items()},
            }
        )
    return {
        "requests_sent": len(records),
        "duration_s": round(last_sent - first_sent, 1),
        "achieved_rate_per_s": round((len(records) - 1) / (last_sent - first_sent), 1),
        "answered_per_s": round(
            sum(1 for r in records if r[3] == 200) / (last_done - first_sent), 1
        ),
        "send_lateness_p99_ms": _ms(sorted(r[1] - r[0] for r in records), 0.99),
        "failures": len(failures),
        "failure_kinds": dict(collections.Counter(r[4] for r in failures)),
        # Sent again on a new connection after a reused one closed before any answer (as
        # browsers, curl and Go's client do); a client that never retries fails these.
        "retried": len(retried),
        "retried_kinds": dict(collections.Counter(r[6] for r in retried)),
        **{f"latency_{k}": v for k, v in _latency(records).items()},
        "switching_requests": len(in_switch),
        **{f"switching_{k}": v for k, v in _latency(list(in_switch.values())).items()},
        "cutover_requests": len(in_cutover),
        "cutover_failures": sum(1 for r in in_cutover.values() if r[3] != 200),
        **{f"cutover_{k}": v for k, v in _latency(list(in_cutover.values())).items()},
        "measured_seconds": round(stopped - started, 1),
        "versions_served": served,
        "switches": per_switch,
    }
