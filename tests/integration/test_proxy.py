"""The node's Caddy proxy, for real: routes by host, switches upstream with zero failed requests."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from shipwreck_node.daemon import Daemon, has_exited
from shipwreck_node.proxy import CaddyProxy, CaddyRouter, app_hosts

pytestmark = pytest.mark.infra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Upstream:
    """A tiny HTTP server answering with a fixed body (stands in for an app container)."""

    def __init__(self, body: bytes) -> None:
        body_ = body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body_)))
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[CaddyProxy]:
    p = CaddyProxy(
        admin=f"127.0.0.1:{_free_port()}",
        http_port=_free_port(),
        state_dir=tmp_path / "caddy",
        dns_port=_free_port(),
    )
    p.ensure_running()
    yield p
    p.stop()


def _ended(pid: int) -> bool:
    """Whether ``pid`` has exited (not yet reaped counts)."""
    try:
        return has_exited(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def _kill(helper: Daemon) -> None:
    """SIGKILL a helper and wait until the proxy can tell it has exited."""
    os.kill(helper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while helper.exit_status() is None:
        assert time.monotonic() < deadline, f"pid {helper.pid} still runs 10 s after SIGKILL"
        time.sleep(0.02)


def _get(port: int, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_an_app_is_served_at_its_host_and_its_own_domain(proxy: CaddyProxy) -> None:
    app = Upstream(b"hello from v1")
    try:
        proxy.route("demo", app_hosts("demo", "localhost", "demo.example.org"), app.address)
        assert _get(proxy.http_port, "demo.localhost") == (200, b"hello from v1")
        assert _get(proxy.http_port, "demo.example.org") == (200, b"hello from v1")
        assert proxy.upstream("demo") == app.address
        status, body = _get(proxy.http_port, "other.localhost")
        assert status == 404
        assert b"No Shipwreck app is deployed at other.localhost" in body
    finally:
        app.close()


def test_switching_upstream_drops_no_request(proxy: CaddyProxy) -> None:
    old, new = Upstream(b"v1"), Upstream(b"v2")
    proxy.route("zero", app_hosts("zero", "localhost"), old.address)
    results: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            results.append(_get(proxy.http_port, "zero.localhost"))
            time.sleep(0.02)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        proxy.route("zero", app_hosts("zero", "localhost"), new.address)
        time.sleep(0.5)
        old.close()  # the old container stops only after the switch
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
        new.close()
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    bodies = [body for _, body in results]
    assert bodies[0] == b"v1"
    assert bodies[-1] == b"v2"
    assert len(results) > 40


def test_removing_a_route_only_if_it_still_points_at_the_old_upstream(
    proxy: CaddyProxy,
) -> None:
    proxy.route("keep", app_hosts("keep", "localhost"), "127.0.0.1:1111")
    assert proxy.remove("keep", only_if_upstream="127.0.0.1:2222") is False
    assert proxy.upstream("keep") == "127.0.0.1:1111"
    assert proxy.remove("keep", only_if_upstream="127.0.0.1:1111") is True
    assert proxy.upstream("keep") is None


def test_a_second_proxy_object_joins_the_running_caddy(proxy: CaddyProxy) -> None:
    again = CaddyProxy(
        admin=proxy.admin,
        http_port=proxy.http_port,
        state_dir=proxy.state_dir,
        dns_port=proxy.dns.port,
    )
    again.ensure_running()
    assert again.process is None  # it did not start another Caddy
    again.stop()
    assert proxy.upstream("anything") is None  # the Caddy it joined still answers


def test_a_route_switches_only_while_it_points_where_expected(proxy: CaddyProxy) -> None:
    hosts = app_hosts("guarded", "localhost")
    proxy.route("guarded", hosts, "127.0.0.1:1111")
    assert (
        proxy.route("guarded", hosts, "127.0.0.1:3333", only_if_upstream="127.0.0.1:2222") is False
    )
    assert proxy.upstream("guarded") == "127.0.0.1:1111"
    assert (
        proxy.route("guarded", hosts, "127.0.0.1:3333", only_if_upstream="127.0.0.1:1111") is True
    )
    assert proxy.upstream("guarded") == "127.0.0.1:3333"


def test_routes_lists_every_app_route(proxy: CaddyProxy) -> None:
    proxy.route("one", app_hosts("one", "localhost"), "127.0.0.1:1111")
    proxy.route("two", app_hosts("two", "localhost", "two.example.org"), "127.0.0.1:2222")
    assert proxy.routes() == {"one": "127.0.0.1:1111", "two": "127.0.0.1:2222"}


def test_a_switch_changes_no_caddy_config_and_keeps_every_client_connection(
    proxy: CaddyProxy,
) -> None:
    """The switch is in DNS (see `dnsroutes`): Caddy's config, and with it every keep-alive
    connection of its clients, stays as it was."""
    old, new = Upstream(b"v1"), Upstream(b"v2")
    hosts = app_hosts("kept", "localhost")
    proxy.route("kept", hosts, old.address)
    config = proxy._call("GET", "/config/")[1]
    connection = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=5)

    def ask() -> bytes:
        connection.request("GET", "/", headers={"Host": "kept.localhost"})
        response = connection.getresponse()
        assert response.status == 200
        return response.read()

    try:
        assert ask() == b"v1"
        socket_before = connection.sock
        proxy.route("kept", hosts, new.address)
        # Once `route` returns, no new request goes to the old upstream.
        assert ask() == b"v2"
        assert connection.sock is socket_before  # the same connection, never closed
        assert proxy._call("GET", "/config/")[1] == config
        assert proxy.upstream("kept") == new.address
    finally:
        connection.close()
        old.close()
        new.close()


def test_switches_fail_no_request_of_clients_that_never_retry(proxy: CaddyProxy) -> None:
    """Clients on kept-alive connections and clients connecting anew, none of them
    retrying anything, while the route switches back and forth."""
    a, b = Upstream(b"a"), Upstream(b"b")
    hosts = app_hosts("churn", "localhost")
    proxy.route("churn", hosts, a.address)
    errors: list[str] = []
    served = [0]
    stop = threading.Event()

    def client(keep_alive: bool) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=5)
        while not stop.is_set():
            try:
                connection.request("GET", "/", headers={"Host": "churn.localhost"})
                response = connection.getresponse()
                response.read()
            except OSError as e:  # a reset, or a close before the answer
                errors.append(repr(e))
                connection.close()
                continue
            if response.status == 200:
                served[0] += 1
            else:
                errors.append(f"HTTP {response.status}")
            if not keep_alive:
                connection.close()

    clients = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
    for thread in clients:
        thread.start()
    try:
        for i in range(30):
            proxy.route("churn", hosts, (b, a)[i % 2].address)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        a.close()
        b.close()
    assert not errors, (len(errors), errors[:3])
    assert served[0] > 100  # clients were asking throughout the switches


def test_config_changes_reset_almost_no_connecting_client(proxy: CaddyProxy) -> None:
    """A change of an app's host names is a Caddy config change: Caddy replaces its
    listening socket, and a client connecting at that moment is handed to the new socket
    by the kernel (see `proxy`) instead of being reset.

    Without that setting, tens of these 150 changes reset one of the four busy clients
    (measured: 42 and 55; 4 in a shorter run of 60 changes). With it, a reset is still
    possible in a rarer race (measured under heavy load: 1 change in 100 to 2,000), so
    up to five are tolerated: enough not to fail on that race, few enough to catch the
    setting gone.
    """
    a = Upstream(b"a")
    proxy.route("churn", app_hosts("churn", "localhost"), a.address)
    errors: list[str] = []
    served = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = _get(proxy.http_port, "churn.localhost")
            except OSError as e:  # a reset arrives as URLError or ConnectionResetError
                errors.append(repr(e))
                continue
            if status == 200:
                served[0] += 1
            else:
                errors.append(f"HTTP {status}")

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        for i in range(150):
            domain = f"churn-{i % 2}.example.org"
            proxy.route("churn", app_hosts("churn", "localhost", domain), a.address)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        a.close()
    assert len(errors) <= 5, (len(errors), errors[:3])
    assert not [e for e in errors if e.startswith("HTTP")], errors
    assert served[0] > 150  # clients were connecting throughout the changes


def test_a_node_started_again_with_another_dns_port_replaces_its_unbound(
    proxy: CaddyProxy,
) -> None:
    app = Upstream(b"still here")
    hosts = app_hosts("moved", "localhost")
    try:
        proxy.route("moved", hosts, app.address)
        again = CaddyProxy(
            admin=proxy.admin,
            http_port=proxy.http_port,
            state_dir=proxy.state_dir,
            dns_port=_free_port(),
        )
        again.ensure_running()
        assert proxy.dns.process is not None
        assert proxy.dns.process.child is not None
        assert proxy.dns.process.child.wait(5) == 0  # the unbound on the old port was stopped
        assert again.dns.served == {"moved": app.address}
        # Routing again (as a starting node does for every app) points Caddy at the new one.
        assert again.route("moved", hosts, app.address) is True
        assert _get(proxy.http_port, "moved.localhost") == (200, b"still here")
        again.dns.stop()
    finally:
        app.close()


def test_an_unbound_or_a_caddy_that_exits_is_started_again(proxy: CaddyProxy) -> None:
    app = Upstream(b"back")
    hosts = app_hosts("phoenix", "localhost")
    try:
        proxy.route("phoenix", hosts, app.address)
        assert proxy.revive() is False  # both run
        assert proxy.dns.process is not None
        _kill(proxy.dns.process)
        # unbound comes back with the recorded routes: Caddy's route works as it was.
        assert proxy.revive() is False
        assert _get(proxy.http_port, "phoenix.localhost") == (200, b"back")
        assert proxy.process is not None
        _kill(proxy.process)
        # Caddy comes back with no routes: the caller routes every app again.
        assert proxy.revive() is True
        assert proxy.upstream("phoenix") is None
        proxy.route("phoenix", hosts, app.address)
        assert _get(proxy.http_port, "phoenix.localhost") == (200, b"back")
    finally:
        app.close()


def test_the_node_is_told_at_once_when_its_unbound_or_caddy_exits(proxy: CaddyProxy) -> None:
    router = CaddyRouter(proxy)

    async def scenario() -> None:
        assert await router.exited(0.2) is False  # both run
        # The started ones, then the ones started again in their place.
        for name in ("unbound", "Caddy", "unbound", "Caddy"):
            helper = proxy.dns.process if name == "unbound" else proxy.process
            assert helper is not None
            os.kill(helper.pid, signal.SIGKILL)
            assert await router.exited(30) is True, f"no word of the killed {name}"
            await router.revive()
            assert await router.exited(0.2) is False  # the new one runs, and is watched

    anyio.run(scenario)
    app = Upstream(b"back")
    try:
        proxy.route("phoenix", app_hosts("phoenix", "localhost"), app.address)
        assert _get(proxy.http_port, "phoenix.localhost") == (200, b"back")
    finally:
        app.close()


def test_a_stop_while_a_revive_is_under_way_leaves_no_helper_running(proxy: CaddyProxy) -> None:
    # The node's revive runs in a worker thread, which its shutdown cannot cancel: told of
    # an exit at once, it can still be starting unbound when the node stops.
    assert proxy.dns.process is not None
    _kill(proxy.dns.process)
    reviving, go = threading.Event(), threading.Event()
    start_unbound = proxy.dns.ensure_running

    def held_start() -> None:
        reviving.set()
        go.wait(30)
        start_unbound()

    proxy.dns.ensure_running = held_start  # type: ignore[method-assign]
    revive = threading.Thread(target=proxy.revive)
    revive.start()
    assert reviving.wait(30)
    stop = threading.Thread(target=proxy.stop)
    stop.start()
    stop.join(0.5)  # unguarded, the stop would be over by now, before unbound starts
    go.set()
    revive.join(30)
    stop.join(30)
    ours = str(proxy.state_dir)
    processes = psutil.process_iter(["cmdline"])
    left = [p.pid for p in processes if ours in " ".join(p.info["cmdline"] or [])]
    assert left == [], "a helper started by the revive outlived the stop"
    assert proxy.revive() is False  # stopped: a later revive starts nothing
    assert proxy.dns.process is None
    assert proxy.process is None


def _killed_node(tmp_path: Path, upstream: str) -> tuple[CaddyProxy, int, int]:
    """A node process that starts its proxy, routes one app to ``upstream`` and is killed
    with SIGKILL; the proxy settings of a node started after it on the same state directory,
    and the pids of the Caddy and the unbound the killed one left running."""
    successor = CaddyProxy(
        admin=f"127.0.0.1:{_free_port()}",
        http_port=_free_port(),
        state_dir=tmp_path / "caddy",
        dns_port=_free_port(),
    )
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from shipwreck_node.proxy import CaddyProxy, app_hosts
        proxy = CaddyProxy(
            admin={successor.admin!r},
            http_port={successor.http_port},
            state_dir=Path({str(successor.state_dir)!r}),
            dns_port={successor.dns.port},
        )
        proxy.ensure_running()
        proxy.route("orphan", app_hosts("orphan", "localhost"), {upstream!r})
        print(proxy.process.pid, proxy.dns.process.pid, flush=True)
        time.sleep(600)
        """
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert node.stdout is not None
    line = node.stdout.readline()
    node.kill()  # nothing of the node's own shutdown runs
    node.wait()
    caddy, unbound = (int(pid) for pid in line.split())
    return successor, caddy, unbound


def test_the_caddy_and_unbound_of_a_killed_node_are_supervised_by_the_next_one(
    tmp_path: Path,
) -> None:
    app = Upstream(b"still served")
    successor, caddy, unbound = _killed_node(tmp_path, app.address)
    try:
        # The killed node's apps stay reachable: its Caddy and unbound outlive it.
        assert _get(successor.http_port, "orphan.localhost") == (200, b"still served")
        successor.ensure_running()
        assert successor.process is not None
        assert successor.process.adopted
        assert successor.process.pid == caddy
        assert successor.dns.process is not None
        assert successor.dns.process.adopted
        assert successor.dns.process.pid == unbound
        assert successor.revive() is False  # both run: nothing to do

        # Adopted ones that exit are started again, like ones the node started itself.
        _kill(successor.dns.process)
        _kill(successor.process)
        assert successor.revive() is True
        assert successor.process is not None
        assert not successor.process.adopted
        assert successor.dns.process is not None
        assert not successor.dns.process.adopted
        successor.route("orphan", app_hosts("orphan", "localhost"), app.address)
        assert _get(successor.http_port, "orphan.localhost") == (200, b"still served")
        started = (successor.process.pid, successor.dns.process.pid)
    finally:
        successor.stop()
        for pid in (caddy, unbound):
            if not _ended(pid):
                os.kill(pid, signal.SIGKILL)
        app.close()
    assert all(_ended(pid) for pid in started)


def test_a_node_stops_the_caddy_and_unbound_it_adopted(tmp_path: Path) -> None:
    app = Upstream(b"orphaned")
    successor, caddy, unbound = _killed_node(tmp_path, app.address)
    try:
        successor.ensure_running()
        successor.stop()
        assert _ended(caddy)
        assert _ended(unbound)
        assert not (successor.state_dir / "caddy.process.json").exists()
        assert not (successor.state_dir / "unbound.process.json").exists()
    finally:
        for pid in (caddy, unbound):
            if not _ended(pid):
                os.kill(pid, signal.SIGKILL)
        app.close()
