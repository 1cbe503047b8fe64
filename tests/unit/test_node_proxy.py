"""The Caddy config the node starts with, and the node's proxy settings.

Caddy itself is tested for real in tests/integration/test_proxy.py; what is checked here
would be dangerous to find out there (a Caddy that adds its CA to the host's trust store).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shipwreck_node.proxy import CaddyProxy, keep_connections_across_reloads
from shipwreck_node.settings import NodeSettings
from shipwreck_runtime import SettingsError, load_settings


def test_a_started_caddy_never_installs_its_ca_in_the_host_trust_store(tmp_path: Path) -> None:
    for https_port in (None, 8443):
        config = CaddyProxy(https_port=https_port, state_dir=tmp_path).initial_config()
        local = config["apps"]["pki"]["certificate_authorities"]["local"]
        assert local["install_trust"] is False


def test_plain_http_turns_automatic_https_off(tmp_path: Path) -> None:
    config = CaddyProxy(admin="127.0.0.1:2999", http_port=8080, state_dir=tmp_path)
    server = config.initial_config()["apps"]["http"]["servers"]["shipwreck"]
    assert server["listen"] == [":8080"]
    assert server["automatic_https"] == {"disable": True}
    assert config.initial_config()["admin"] == {"listen": "127.0.0.1:2999"}


def test_https_listens_on_both_ports_and_tells_caddy_which_they_are(tmp_path: Path) -> None:
    config = CaddyProxy(http_port=8080, https_port=8443, state_dir=tmp_path).initial_config()
    http = config["apps"]["http"]
    assert http["servers"]["shipwreck"]["listen"] == [":8080", ":8443"]
    assert "automatic_https" not in http["servers"]["shipwreck"]
    assert (http["http_port"], http["https_port"]) == (8080, 8443)


def test_proxy_settings_default_to_plain_http_on_port_80() -> None:
    settings = load_settings(NodeSettings, {})
    assert settings.apps_domain == "localhost"
    assert (settings.proxy_http_port, settings.proxy_https_port) == (80, None)
    assert settings.proxy_admin == "127.0.0.1:2019"
    assert (settings.drain_seconds, settings.keep_images) == (2.0, 5)
    assert settings.proxy_migrate_connections is True


def test_proxy_settings_come_from_the_environment() -> None:
    settings = load_settings(
        NodeSettings,
        {
            "SHIPWRECK_APPS_DOMAIN": "apps.example.com",
            "SHIPWRECK_PROXY_HTTP_PORT": "8080",
            "SHIPWRECK_PROXY_HTTPS_PORT": "8443",
            "SHIPWRECK_PROXY_ADMIN": "127.0.0.1:3019",
            "SHIPWRECK_DRAIN_SECONDS": "0.5",
            "SHIPWRECK_KEEP_IMAGES": "3",
            "SHIPWRECK_PROXY_MIGRATE_CONNECTIONS": "false",
        },
    )
    assert settings.proxy_migrate_connections is False
    assert settings.apps_domain == "apps.example.com"
    assert (settings.proxy_http_port, settings.proxy_https_port) == (8080, 8443)
    assert settings.proxy_admin == "127.0.0.1:3019"
    assert (settings.drain_seconds, settings.keep_images) == (0.5, 3)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SHIPWRECK_PROXY_HTTP_PORT", "0"), ("SHIPWRECK_KEEP_IMAGES", "0")],
)
def test_impossible_proxy_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(NodeSettings, {variable: value})


def test_two_nodes_keep_their_caddy_state_apart() -> None:
    one, two = NodeSettings(node_name="one"), NodeSettings(node_name="two")
    assert one.proxy_dir != two.proxy_dir
    assert not one.proxy_dir.is_relative_to(one.node_work_dir)  # emptied at start-up


def test_the_kernel_is_told_to_hand_waiting_connections_to_caddys_new_socket(
    tmp_path: Path,
) -> None:
    sysctl = tmp_path / "tcp_migrate_req"
    sysctl.write_text("0\n")
    assert keep_connections_across_reloads(sysctl) is None
    assert sysctl.read_text() == "1\n"
    assert keep_connections_across_reloads(sysctl) is None  # already on: nothing written


def test_a_kernel_setting_that_cannot_be_changed_is_explained(tmp_path: Path) -> None:
    missing = keep_connections_across_reloads(tmp_path / "absent")
    assert missing == f"{tmp_path / 'absent'} does not exist (Linux older than 5.14)"
    # A directory stands in for a file that cannot be written.
    (tmp_path / "dir").mkdir()
    problem = keep_connections_across_reloads(tmp_path / "dir")
    assert problem is not None
    assert problem.startswith(f"{tmp_path / 'dir'} cannot be set to 1")
