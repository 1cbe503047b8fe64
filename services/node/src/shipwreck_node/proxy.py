"""The node's reverse proxy: Caddy, configured through its admin API on loopback.

Every app has one route, ``@id`` ``shipwreck-app-<app>``, matching ``<app>.<apps domain>``
and the app's own domain. The route does not name the container serving the app: Caddy
looks it up as a DNS SRV record that the node's own unbound answers (`dnsroutes`). So
switching a redeploy over changes that record and no Caddy config: requests in flight
finish on the old upstream, new ones go to the new one, and every client keeps its
keep-alive connections. Caddy's config changes only when an app gets its first route,
changes its host names, or loses its route.

Each such config change makes Caddy open a new listening socket beside the old one
(``SO_REUSEPORT``) and close the old one. Linux resets the connections still waiting in the
closed socket's accept queue unless ``net.ipv4.tcp_migrate_req`` is 1 (Linux 5.14+), which
hands them to the new socket instead: without it, with four clients connecting all the time,
most changes reset one of them; with it, none did in 2,500 changes on a quiet machine, and
1 change in 100 to 2,000 still did under heavy load (a rarer race). The proxy turns it on
before it configures Caddy.

`CaddyProxy` speaks the admin API (blocking calls); `CaddyRouter` is the node's `Router`
port over it, running each call in a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from shipwreck_node.daemon import Daemon, adopt, start_daemon
from shipwreck_node.dnsroutes import REFRESH_SECONDS, Unbound, lookup_name
from shipwreck_node.ports import ProxyError

__all__ = [
    "SERVER",
    "CaddyProxy",
    "CaddyRouter",
    "ProxyError",
    "app_hosts",
    "keep_connections_across_reloads",
    "route_id",
]

log = logging.getLogger(__name__)

SERVER: Final = "shipwreck"
ROUTE_PREFIX: Final = "shipwreck-app-"
MIGRATE_REQ: Final = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def keep_connections_across_reloads(sysctl: Path = MIGRATE_REQ) -> str | None:
    """Turn on ``net.ipv4.tcp_migrate_req`` for this network namespace.

    Returns None when it is on, else why it could not be turned on (the caller warns:
    route changes then may reset a client connecting at that moment).
    """
    try:
        if sysctl.read_text().strip() == "1":
            return None
        sysctl.write_text("1\n")
    except FileNotFoundError:
        return f"{sysctl} does not exist (Linux older than 5.14)"
    except OSError as e:
        return f"{sysctl} cannot be set to 1 ({e.strerror or e}); run the node as root"
    return None


def route_id(app: str) -> str:
    """The Caddy ``@id`` of an app's route."""
    return f"{ROUTE_PREFIX}{app}"


def app_hosts(app: str, apps_domain: str, domain: str | None = None) -> list[str]:
    """The host names an app answers on: ``<app>.<apps domain>`` and its own domain."""
    hosts = [f"{app}.{apps_domain}"]
    if domain and domain not in hosts:
        hosts.append(domain)
    return hosts


class CaddyProxy:
    """Routes apps through one Caddy server block, starting Caddy if none answers."""

    def __init__(
        self,
        *,
        admin: str = "127.0.0.1:2019",
        http_port: int = 80,
        https_port: int | None = None,
        state_dir: Path = Path(".shipwreck/caddy"),
        caddy_binary: str = "caddy",
        timeout: float = 5.0,
        migrate_connections: bool = True,
        sysctl: Path = MIGRATE_REQ,
        dns_port: int = 2053,
        unbound_binary: str = "unbound",
    ) -> None:
        self.admin = admin
        self.http_port = http_port
        self.https_port = https_port
        self.state_dir = state_dir
        self.caddy_binary = caddy_binary
        self.timeout = timeout
        self.migrate_connections = migrate_connections
        self.sysctl = sysctl
        # The Caddy this proxy supervises: started, or adopted from a node killed before.
        self.process: Daemon | None = None
        self.dns = Unbound(port=dns_port, state_dir=state_dir, binary=unbound_binary)
        # A check of a route and its change must not interleave with another change from
        # this process (say, a stop's "remove only if still mine" and a redeploy's switch).
        self._changes = threading.Lock()
        # Set by `stop`: a revive that was under way in a worker thread while the node
        # stopped must not start a helper after it (nobody would stop that one).
        self._stopped = False

    # --- admin API ------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.admin}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                text = response.read().decode() or "null"
                return response.status, json.loads(text)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            raise ProxyError(f"Caddy admin API at {self.admin} is unreachable: {e}") from e

    def _server_config(self) -> dict[str, Any]:
        listen = [f":{self.http_port}"]
        # Unknown hosts get a clear 404 instead of Caddy's empty 200; app routes are inserted
        # before it.
        fallback = {
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 404,
                    "body": "No Shipwreck app is deployed at {http.request.host}.\n",
                }
            ],
        }
        config: dict[str, Any] = {"listen": listen, "routes": [fallback]}
        if self.https_port is None:
            # Plain HTTP on the apps port (local development, tests, behind a balancer).
            config["automatic_https"] = {"disable": True}
        else:
            # Real domains: Caddy obtains and renews certificates for every routed host.
            listen.append(f":{self.https_port}")
        return config

    def initial_config(self) -> dict[str, Any]:
        """The whole config of a Caddy this proxy starts: admin API, Shipwreck's server."""
        http: dict[str, Any] = {"servers": {SERVER: self._server_config()}}
        if self.https_port is not None:
            # Redirects and ACME challenges must use the ports Caddy really listens on.
            http.update(http_port=self.http_port, https_port=self.https_port)
        return {
            "admin": {"listen": self.admin},
            "apps": {
                "http": http,
                # Certificates for local names come from Caddy's own CA; it must never add
                # that CA to the host's trust store (which the node's builds trust).
                "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
            },
        }

    def ensure_running(self) -> None:
        """Make sure the route records are served, and that Caddy answers and has
        Shipwreck's server block (start either if needed)."""
        with self._changes:
            self._stopped = False
        self.dns.ensure_running()
        self._ensure_caddy()

    def _ensure_caddy(self) -> None:
        if self.migrate_connections:
            problem = keep_connections_across_reloads(self.sysctl)
            if problem is not None:
                log.warning(
                    "route changes may reset a client connecting at that moment: %s "
                    "(or set SHIPWRECK_PROXY_MIGRATE_CONNECTIONS=false to stop trying)",
                    problem,
                )
        try:
            status, server = self._call("GET", f"/config/apps/http/servers/{SERVER}")
        except ProxyError:
            self._start()
            status, server = self._call("GET", f"/config/apps/http/servers/{SERVER}")
        else:
            if self.process is None:
                self.process = adopt("Caddy", self._record)
        if status == 200 and server:
            return
        # A Caddy someone else runs: add our server block beside what it serves.
        status, apps = self._call("GET", "/config/apps/http/servers")
        path = f"/config/apps/http/servers/{SERVER}" if status == 200 and apps else None
        if path is None:
            status, body = self._call(
                "POST", "/config/apps/http", {"servers": {SERVER: self._server_config()}}
            )
        else:
            status, body = self._call("PUT", path, self._server_config())
        if status != 200:
            raise ProxyError(f"Caddy refused Shipwreck's server block: {status} {body}")

    def _start(self) -> None:
        binary = shutil.which(self.caddy_binary)
        if binary is None:
            raise ProxyError(
                f"no Caddy answers at {self.admin} and `{self.caddy_binary}` is not "
                "installed (Debian: apt-get install caddy)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "caddy.json"
        path.write_text(json.dumps(self.initial_config(), indent=2))
        self.process = start_daemon(
            f"Caddy (admin API {self.admin})",
            [binary, "run", "--config", str(path)],
            log_path=self.state_dir / "caddy.log",
            record=self._record,
            ready=self._answers,
            env={
                "HOME": str(self.state_dir.resolve()),
                "PATH": "/usr/bin:/bin",
                "XDG_DATA_HOME": str(self.state_dir.resolve()),
                "XDG_CONFIG_HOME": str(self.state_dir.resolve()),
            },
        )
        log.info(
            "started Caddy (pid %d), admin %s, http :%d",
            self.process.pid,
            self.admin,
            self.http_port,
        )

    @property
    def _record(self) -> Path:
        return self.state_dir / "caddy.process.json"

    def _answers(self) -> bool:
        try:
            self._call("GET", "/config/")
        except ProxyError:
            return False
        return True

    def revive(self) -> bool:
        """Start again the unbound or the Caddy this proxy supervises, if it has exited.

        unbound comes back with the recorded routes (`routes.json`); Caddy comes back with
        none, so True says that every app must be routed again. A Caddy or an unbound
        that someone else runs is theirs to keep running.
        """
        with self._changes:
            if self._stopped:
                return False
            dns = self.dns.process
            ended = None if dns is None else dns.exit_status()
            if dns is not None and ended is not None:
                log.warning("unbound (pid %d) %s; starting it again", dns.pid, ended)
                dns.forget()
                self.dns.process = None
                self.dns.ensure_running()
            caddy = self.process
            ended = None if caddy is None else caddy.exit_status()
            if caddy is None or ended is None:
                return False
            log.warning("Caddy (pid %d) %s; starting it again", caddy.pid, ended)
            caddy.forget()
            self.process = None
            self._ensure_caddy()
            return True

    def exit_watch(self) -> list[int]:
        """Descriptors that become readable when the unbound or the Caddy this proxy
        supervises exits (`Daemon.exit_watch`); the caller closes them."""
        with self._changes:
            daemons = (self.dns.process, self.process)
            watches = [d.exit_watch() for d in daemons if d is not None]
        return [fd for fd in watches if fd is not None]

    def stop(self) -> None:
        """Stop the Caddy and unbound this proxy supervises (ones it started, or adopted from
        a node killed before it); ones that someone else runs keep running.

        Final until `ensure_running`: a revive still under way finishes first (and what it
        started is stopped here), and one that comes later starts nothing."""
        with self._changes:
            self._stopped = True
            if self.process is not None:
                self.process.stop()
            self.process = None
            self.dns.stop()

    # --- routes ---------------------------------------------------------------------------

    def route_config(self, app: str, hosts: Sequence[str]) -> dict[str, Any]:
        """The Caddy route of ``app``: its host names, proxied to what its SRV record names."""
        resolver = {"addresses": [self.dns.address]}
        proxy = {
            "handler": "reverse_proxy",
            "dynamic_upstreams": {
                "source": "srv",
                "name": lookup_name(app),
                "refresh": f"{int(REFRESH_SECONDS * 1000)}ms",
                "resolver": resolver,
            },
            # One record per app; "first" never picks by chance.
            "load_balancing": {"selection_policy": {"policy": "first"}},
            # The record names a host in the same zone: only unbound knows it.
            "transport": {"protocol": "http", "resolver": resolver},
        }
        return {
            "@id": route_id(app),
            "match": [{"host": list(hosts)}],
            "handle": [proxy],
            "terminal": True,
        }

    def route(
        self,
        app: str,
        hosts: Sequence[str],
        upstream: str,
        *,
        only_if_upstream: str | None = None,
    ) -> bool:
        """Point ``hosts`` at ``upstream`` (``127.0.0.1:<port>``), creating the route or
        switching it in one change; with ``only_if_upstream``, only while the route points
        there. Whether the route was changed.

        Returns once Caddy can no longer send a new request to the previous upstream.
        """
        body = self.route_config(app, hosts)
        with self._changes:
            status, existing = self._call("GET", f"/id/{route_id(app)}")
            routed = status == 200 and isinstance(existing, dict)
            current = self._upstream_in(app, existing) if routed else None
            if only_if_upstream is not None and current != only_if_upstream:
                return False
            switched = self.dns.served.get(app) != upstream
            if switched:
                # The record first: a new route's first request must find it.
                self.dns.publish({**self.dns.served, app: upstream})
            if not routed:
                # PUT at index 0 inserts: app routes stay ahead of the 404 fallback.
                self._change("PUT", f"/config/apps/http/servers/{SERVER}/routes/0", app, body)
            elif existing != body:
                # New host names, or a route from before look-ups (a static upstream).
                self._change("PATCH", f"/id/{route_id(app)}", app, body)
        if switched:
            # Caddy keeps an answer for one refresh, even across its config changes.
            time.sleep(REFRESH_SECONDS + 0.05)
        return True

    def _change(self, method: str, path: str, app: str, body: dict[str, Any]) -> None:
        status, answer = self._call(method, path, body)
        if status != 200:
            raise ProxyError(f"Caddy refused the route of {app}: {status} {answer}")

    def upstream(self, app: str) -> str | None:
        """Where an app's route points now, or None when it has none."""
        status, route = self._call("GET", f"/id/{route_id(app)}")
        if status != 200 or not isinstance(route, dict):
            return None
        return self._upstream_in(app, route)

    def _upstream_in(self, app: str, route: dict[str, Any]) -> str | None:
        """Where ``app``'s Caddy route leads: its record, or the upstream it names itself
        (a route made before look-ups, by an older node)."""
        recorded = self.dns.served.get(app)
        if recorded is not None:
            return recorded
        try:
            dial = route["handle"][0]["upstreams"][0]["dial"]
        except (KeyError, IndexError, TypeError):
            return None
        return dial if isinstance(dial, str) else None

    def routes(self) -> dict[str, str]:
        """Every app route in Shipwreck's server block: app -> upstream."""
        status, body = self._call("GET", f"/config/apps/http/servers/{SERVER}/routes")
        if status != 200 or not isinstance(body, list):
            return {}
        found: dict[str, str] = {}
        for route in body:
            ident = route.get("@id") if isinstance(route, dict) else None
            if not isinstance(ident, str) or not ident.startswith(ROUTE_PREFIX):
                continue
            app = ident.removeprefix(ROUTE_PREFIX)
            upstream = self._upstream_in(app, route)
            if upstream is not None:
                found[app] = upstream
        return found

    def remove(self, app: str, *, only_if_upstream: str | None = None) -> bool:
        """Delete an app's route; with ``only_if_upstream``, only while it still points there
        (stopping a superseded container must never unroute its successor)."""
        with self._changes:
            current = self.upstream(app)
            if current is None:
                return False
            if only_if_upstream is not None and current != only_if_upstream:
                return False
            status, _ = self._call("DELETE", f"/id/{route_id(app)}")
            if status != 200:
                return False
            if app in self.dns.served:
                self.dns.publish({k: v for k, v in self.dns.served.items() if k != app})
            return True


class CaddyRouter:
    """The node's `Router` port over a `CaddyProxy` (each admin call in a worker thread)."""

    def __init__(self, proxy: CaddyProxy) -> None:
        self.proxy = proxy

    async def start(self) -> None:
        """Make sure Caddy runs, with Shipwreck's server block."""
        await anyio.to_thread.run_sync(self.proxy.ensure_running)

    async def close(self) -> None:
        """Stop the Caddy and unbound this node supervises, if any."""
        await anyio.to_thread.run_sync(self.proxy.stop)

    async def revive(self) -> bool:
        """See `CaddyProxy.revive`."""
        return await anyio.to_thread.run_sync(self.proxy.revive)

    async def exited(self, within: float) -> bool:
        """See `Router.exited`: the kernel says when a supervised process has exited."""
        watches = await anyio.to_thread.run_sync(self.proxy.exit_watch)
        try:
            return await _any_readable(watches, within)
        finally:
            for fd in watches:
                os.close(fd)

    async def route(
        self,
        app: str,
        hosts: Sequence[str],
        upstream: str,
        *,
        only_if_upstream: str | None = None,
    ) -> bool:
        """See `CaddyProxy.route`."""
        return await anyio.to_thread.run_sync(
            lambda: self.proxy.route(app, hosts, upstream, only_if_upstream=only_if_upstream)
        )

    async def upstream(self, app: str) -> str | None:
        """See `CaddyProxy.upstream`."""
        return await anyio.to_thread.run_sync(self.proxy.upstream, app)

    async def routes(self) -> dict[str, str]:
        """See `CaddyProxy.routes`."""
        return await anyio.to_thread.run_sync(self.proxy.routes)

    async def remove(self, app: str, *, only_if_upstream: str | None = None) -> bool:
        """See `CaddyProxy.remove`."""
        return await anyio.to_thread.run_sync(
            lambda: self.proxy.remove(app, only_if_upstream=only_if_upstream)
        )


async def _any_readable(fds: Sequence[int], within: float) -> bool:
    """Whether one of ``fds`` became readable within ``within`` seconds."""
    if not fds:
        await anyio.sleep(within)
        return False
    readable = False
    with anyio.move_on_after(within):
        async with anyio.create_task_group() as group:

            async def watch(fd: int) -> None:
                nonlocal readable
                await anyio.wait_readable(fd)
                readable = True
                group.cancel_scope.cancel()

            for fd in fds:
                group.start_soon(watch, fd)
    return readable
