"""Where each app's route leads, answered to Caddy by a DNS server of the node's own.

Caddy applies any change to its config by building a new server and shutting the old one
down, which closes every idle keep-alive connection of every client (and swaps the
listening socket). Switching a redeploy's route that way made a client that never retries
fail about one request in six switches (docs/BENCHMARKS.md). So an app's Caddy route
never names its container: its ``reverse_proxy`` looks the upstream up as a DNS SRV
record, ``_http._tcp.<app>.shipwreck.``, at most one `REFRESH_SECONDS` old, and a switch
rewrites that record. Caddy's config, its connections and its listening socket stay as
they are.

The records are served by unbound (Debian package ``unbound``), on loopback only, as an
authoritative zone read from a file in the node's proxy directory. A change writes the
whole file anew and has unbound reload it, which swaps the zone at once: a look-up sees
the old record or the new one, never none (unbound's ``local_data`` commands would need a
removal before the new record). What the zone holds is also kept as JSON beside it, the
node's own record of its routes, from which the zone is written again at start.

`render_zone` and `unbound_config` are pure; `Unbound` runs and reloads the server.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from shipwreck_node.daemon import Daemon, adopt, start_daemon
from shipwreck_node.ports import ProxyError

__all__ = ["REFRESH_SECONDS", "ZONE", "Unbound", "lookup_name", "render_zone", "unbound_config"]

log = logging.getLogger(__name__)

ZONE: Final = "shipwreck."
REFRESH_SECONDS: Final = 0.2
"""How long Caddy may use an SRV answer before it asks again; a switch waits this long."""

# Debian installs unbound's programs in /usr/sbin, which a normal user's PATH may lack.
_SBIN: Final = ("/usr/sbin", "/sbin")
# A unix socket's path must fit in sockaddr_un (108 bytes with its terminating NUL).
_SOCKET_PATH_MAX: Final = 100


def lookup_name(app: str) -> str:
    """The SRV name Caddy looks up for ``app``'s upstream."""
    return f"_http._tcp.{app}.{ZONE}"


def _target(host: str) -> tuple[str, str, str]:
    """The zone's name for an upstream host, with its record type and address."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ProxyError(
            f"upstream host {host!r} is not an IP address; the node routes apps to "
            "their published ports on an IP address (such as 127.0.0.1)"
        ) from None
    if address.version == 4:
        return "h-" + str(address).replace(".", "-"), "A", str(address)
    return "h6-" + address.exploded.replace(":", "-"), "AAAA", str(address)


def _split(upstream: str) -> tuple[str, int]:
    host, sep, port = upstream.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProxyError(f"upstream {upstream!r} is not host:port with a port in 1..65535")
    return host, int(port)


def render_zone(upstreams: Mapping[str, str], serial: int = 1) -> str:
    """The zone file answering each app's SRV look-up with its upstream (``host:port``)."""
    lines = [
        f"$ORIGIN {ZONE}",
        # Nothing may be cached anywhere: a switch must be seen at the next look-up.
        "$TTL 0",
        f"@ IN SOA localhost. hostmaster.localhost. {serial} 3600 600 86400 0",
        "@ IN NS localhost.",
    ]
    hosts: dict[str, tuple[str, str]] = {}
    services = []
    for app in sorted(upstreams):
        host, port = _split(upstreams[app])
        name, rtype, address = _target(host)
        hosts[name] = (rtype, address)
        services.append(f"_http._tcp.{app} IN SRV 0 0 {port} {name}.{ZONE}")
    lines += [f"{name} IN {rtype} {address}" for name, (rtype, address) in sorted(hosts.items())]
    return "\n".join([*lines, *services, ""])


def control_socket(state_dir: Path) -> Path:
    """Where unbound's control socket is: in ``state_dir``, or in /tmp when that path
    would be too long for a unix socket (named after ``state_dir``, so found again)."""
    path = state_dir.resolve() / "unbound.ctl"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"shipwreck-unbound-{digest}.ctl"  # noqa: S108 - a socket, ours


def unbound_config(state_dir: Path, port: int) -> str:
    """unbound's config: the route zone on 127.0.0.1:``port``, controlled by a socket."""
    state = state_dir.resolve()
    return "\n".join(
        [
            "server:",
            f"    interface: 127.0.0.1@{port}",
            f"    port: {port}",
            # Two nodes on one machine must never share a port: with SO_REUSEPORT the
            # second unbound would bind too and answer half the look-ups.
            "    so-reuseport: no",
            "    do-ip6: no",
            "    do-daemonize: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{state}"',
            '    pidfile: ""',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            "    num-threads: 1",
            "    access-control: 127.0.0.0/8 allow",
            # Only the zone is ever asked for: no validation, no recursion to localhost.
            '    module-config: "iterator"',
            "    do-not-query-localhost: yes",
            "remote-control:",
            "    control-enable: yes",
            f'    control-interface: "{control_socket(state_dir)}"',
            "auth-zone:",
            f'    name: "{ZONE}"',
            f'    zonefile: "{state / "routes.zone"}"',
            "    for-downstream: yes",
            "    for-upstream: no",
            "    fallback-enabled: no",
            "",
        ]
    )


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which(name, path=path)


class Unbound:
    """The node's DNS server for its routes: started if it does not answer, reloaded on
    every change, and the record of the routes it serves (``routes.json``)."""

    def __init__(
        self,
        *,
        port: int,
        state_dir: Path,
        binary: str = "unbound",
        control_binary: str = "unbound-control",
        timeout: float = 5.0,
    ) -> None:
        self.port = port
        self.state_dir = state_dir
        self.binary = binary
        self.control_binary = control_binary
        self.timeout = timeout
        # The unbound this object supervises: started, or adopted from a node killed before.
        self.process: Daemon | None = None
        # What unbound serves, as last recorded (read again by `ensure_running`).
        self.served: dict[str, str] = self._recorded(strict=False)

    @property
    def address(self) -> str:
        """Where Caddy sends its look-ups (a Caddy network address)."""
        return f"udp/127.0.0.1:{self.port}"

    @property
    def _config(self) -> Path:
        return self.state_dir / "unbound.conf"

    @property
    def _record(self) -> Path:
        return self.state_dir / "unbound.process.json"

    @property
    def _routes(self) -> Path:
        return self.state_dir / "routes.json"

    def _control(self, *args: str) -> subprocess.CompletedProcess[str]:
        binary = _which(self.control_binary)
        if binary is None:
            raise ProxyError(
                f"`{self.control_binary}` is not installed (Debian: apt-get install unbound)"
            )
        try:
            return subprocess.run(
                [binary, "-c", str(self._config), *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ProxyError(f"unbound-control {' '.join(args)} took over {e.timeout} s") from e

    def _recorded(self, *, strict: bool) -> dict[str, str]:
        try:
            recorded = json.loads(self._routes.read_text())
            if not isinstance(recorded, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return {}
        except ValueError as e:
            if not strict:
                return {}
            raise ProxyError(
                f"{self._routes} is not the node's record of its routes ({e}); remove it, "
                "and the node routes every app it runs again at start"
            ) from e
        return {str(app): str(upstream) for app, upstream in recorded.items()}

    def _answers(self) -> bool:
        return self._config.exists() and self._control("status").returncode == 0

    def ensure_running(self) -> None:
        """Serve the recorded routes: start unbound if it does not answer, else reload."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.served = self._recorded(strict=True)
        self._write_zone(self.served)
        config = unbound_config(self.state_dir, self.port)
        if self._answers():
            if self._config.read_text() == config:
                self._reload()
                if self.process is None:
                    self.process = adopt("unbound", self._record)
                return
            # Started with other settings (another port): Caddy would ask the wrong one.
            self._control("stop")
            deadline = time.monotonic() + 10
            while self._answers() and time.monotonic() < deadline:
                time.sleep(0.1)
        self._config.write_text(config)
        self._start()

    def _start(self) -> None:
        binary = _which(self.binary)
        if binary is None:
            raise ProxyError(
                f"`{self.binary}` is not installed (Debian: apt-get install unbound); the "
                "node's proxy looks its routes up in it"
            )
        self.process = start_daemon(
            f"unbound (127.0.0.1:{self.port})",
            [binary, "-c", str(self._config)],
            log_path=self.state_dir / "unbound.log",
            record=self._record,
            ready=self._answers,
        )
        log.info("started unbound (pid %d) on 127.0.0.1:%d", self.process.pid, self.port)

    def _write_zone(self, upstreams: Mapping[str, str]) -> None:
        # A whole new file, renamed into place: unbound never reads half of one.
        path = self.state_dir / "routes.zone"
        new = path.with_suffix(".zone.new")
        new.write_text(render_zone(upstreams, serial=int(time.time())))
        new.replace(path)

    def _reload(self) -> None:
        done = self._control("auth_zone_reload", ZONE)
        if done.returncode != 0:
            detail = (done.stdout + done.stderr).strip()
            raise ProxyError(f"unbound did not take the new routes: {detail}")

    def publish(self, upstreams: Mapping[str, str]) -> None:
        """Serve ``upstreams`` (app -> ``host:port``) from now on, all at once."""
        self._write_zone(upstreams)
        try:
            self._reload()
        except ProxyError:
            # What unbound still serves stays the record.
            self._write_zone(self.served)
            raise
        new = self._routes.with_suffix(".json.new")
        new.write_text(json.dumps(dict(upstreams), indent=1, sort_keys=True))
        new.replace(self._routes)
        self.served = dict(upstreams)

    def shut_down(self) -> None:
        """Stop the unbound answering on this state directory's control socket, whoever
        started it (a node that was killed leaves its unbound running)."""
        if self._answers():
            self._control("stop")

    def stop(self) -> None:
        """Stop the unbound this object supervises (one it started, or adopted from a node
        killed before it); one that someone else runs keeps running."""
        if self.process is not None:
            self.process.stop()
        self.process = None
