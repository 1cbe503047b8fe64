"""The route records the node's unbound serves to Caddy, and unbound's config.

unbound itself answers for real in tests/integration/test_proxy.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shipwreck_node.dnsroutes import (
    Unbound,
    control_socket,
    lookup_name,
    render_zone,
    unbound_config,
)
from shipwreck_node.ports import ProxyError


def test_each_app_has_an_srv_record_naming_its_port_and_a_host_of_the_zone() -> None:
    zone = render_zone({"web": "127.0.0.1:32768", "api": "127.0.0.1:32769"}, serial=7)
    lines = zone.splitlines()
    assert lines[:2] == ["$ORIGIN shipwreck.", "$TTL 0"]
    assert lines[2] == "@ IN SOA localhost. hostmaster.localhost. 7 3600 600 86400 0"
    assert "_http._tcp.web IN SRV 0 0 32768 h-127-0-0-1.shipwreck." in lines
    assert "_http._tcp.api IN SRV 0 0 32769 h-127-0-0-1.shipwreck." in lines
    assert lines.count("h-127-0-0-1 IN A 127.0.0.1") == 1
    assert lookup_name("web") == "_http._tcp.web.shipwreck."


def test_an_ipv6_upstream_gets_an_aaaa_record() -> None:
    zone = render_zone({"web": "[::1]:8080"})
    name = "h6-0000-0000-0000-0000-0000-0000-0000-0001"
    assert f"{name} IN AAAA ::1" in zone.splitlines()
    assert f"_http._tcp.web IN SRV 0 0 8080 {name}.shipwreck." in zone.splitlines()


def test_no_routes_is_a_zone_too() -> None:
    assert "SRV" not in render_zone({})


@pytest.mark.parametrize(
    ("upstream", "named"),
    [
        ("localhost:8080", "is not an IP address"),
        ("127.0.0.1", "is not host:port"),
        ("127.0.0.1:0", "port in 1..65535"),
        ("127.0.0.1:http", "is not host:port"),
    ],
)
def test_an_upstream_the_zone_cannot_hold_is_refused_with_what_is_allowed(
    upstream: str, named: str
) -> None:
    with pytest.raises(ProxyError, match=named):
        render_zone({"web": upstream})


def test_unbound_answers_on_its_port_alone_from_the_zone_file(tmp_path: Path) -> None:
    config = unbound_config(tmp_path, 2153)
    assert "    interface: 127.0.0.1@2153" in config
    # A second unbound on the same port must fail to start, not share the look-ups.
    assert "    so-reuseport: no" in config
    assert f'    zonefile: "{tmp_path.resolve() / "routes.zone"}"' in config
    assert f'    control-interface: "{tmp_path.resolve() / "unbound.ctl"}"' in config


def test_a_control_socket_whose_path_is_too_long_goes_to_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    socket = control_socket(deep)
    assert socket.parent == Path("/tmp")
    assert control_socket(deep) == socket  # found again after a restart
    assert control_socket(tmp_path / "other" / ("d" * 120)) != socket


def test_a_damaged_record_of_the_routes_is_named_at_start(tmp_path: Path) -> None:
    (tmp_path / "routes.json").write_text("[1, 2")
    dns = Unbound(port=2153, state_dir=tmp_path)
    assert dns.served == {}
    with pytest.raises(ProxyError, match=r"routes\.json is not the node's record"):
        dns.ensure_running()


def test_a_missing_unbound_says_which_package_provides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    dns = Unbound(port=2153, state_dir=tmp_path, binary="no-such-unbound")
    dns.control_binary = "no-such-unbound-control"
    with pytest.raises(ProxyError, match="apt-get install unbound"):
        dns.ensure_running()
