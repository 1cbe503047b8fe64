"""The CLI's own logic: arguments, token lookup, what it prints, how it fails."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from shipwreck_cli import render
from shipwreck_cli.cli import Io, Progress, build_parser, main
from shipwreck_cli.client import ApiClient, CliError, _websocket_url, resolve_token

DEPLOYMENT = {
    "id": "3f1c",
    "app": "hello",
    "repoUrl": "https://git.example.com/team/hello.git",
    "branch": "main",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "status": "ERRORED",
    "trigger": "MANUAL",
    "actor": "admin",
    "node": None,
    "url": None,
    "error": "pip install failed",
    "requestedAt": "2026-01-02T03:04:05+00:00",
    "history": [
        {"status": "REQUESTED", "at": "2026-01-02T03:04:05+00:00", "message": "requested"},
        {"status": "ERRORED", "at": "2026-01-02T04:04:05+01:00", "message": "failed [x]"},
    ],
}


def _run(argv: list[str], **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_options_are_accepted_before_and_after_the_subcommand() -> None:
    parser = build_parser()
    before = parser.parse_args(["--api-url", "http://a", "deploy", "git://h/r.git"])
    after = parser.parse_args(["deploy", "git://h/r.git", "--token", "t", "-b", "dev"])
    assert (before.api_url, before.branch, before.watch, before.detach) == (
        "http://a",
        "main",
        True,
        False,
    )
    assert (after.token, after.branch) == ("t", "dev")
    assert not parser.parse_args(["deploy", "u", "--no-watch"]).watch


def test_token_comes_from_the_option_then_the_environment_then_the_api_token_file(
    tmp_path: Path,
) -> None:
    (tmp_path / ".shipwreck").mkdir()
    (tmp_path / ".shipwreck" / "api-token").write_text("from-file\n")
    assert resolve_token("given", {"SHIPWRECK_API_TOKEN": "env"}, tmp_path) == "given"
    assert resolve_token(None, {"SHIPWRECK_API_TOKEN": "env"}, tmp_path) == "env"
    assert resolve_token(None, {}, tmp_path) == "from-file"
    other = tmp_path / "state"
    other.mkdir()
    (other / "api-token").write_text("elsewhere")
    assert resolve_token(None, {"SHIPWRECK_STATE_DIR": str(other)}, tmp_path) == "elsewhere"


def test_without_any_token_the_cli_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no API token: pass --token, set SHIPWRECK_API_TOKEN"):
        resolve_token(None, {}, tmp_path)


def test_an_unreachable_api_is_a_clear_error_with_exit_code_2() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, out, err = _run(["status", "--api-url", url, "--token", "t"])
    assert code == 2
    assert out == ""
    assert err.startswith(f"shipwreck: cannot reach the Shipwreck API at {url}")
    assert "SHIPWRECK_API_URL" in err


def test_the_api_url_comes_from_the_environment() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, _, err = _run(["apps"], SHIPWRECK_API_URL=url, SHIPWRECK_API_TOKEN="t")
    assert code == 2
    assert url in err


def test_urls_for_http_and_websocket() -> None:
    client = ApiClient("https://shipwreck.example.com/", "t")
    assert client.graphql_url == "https://shipwreck.example.com/graphql"
    assert _websocket_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/graphql"
    assert _websocket_url("https://h/base/graphql") == "wss://h/base/graphql"


def test_tables_align_columns() -> None:
    text = render.table(("A", "LONGER"), [("xyz", "1"), ("q", "")])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "q"]
    assert render.table(("A",), []) == "(none)"


def test_deployment_detail_shows_fields_error_and_history_in_utc() -> None:
    text = render.deployment_detail(DEPLOYMENT)
    assert "status      ERRORED" in text
    assert "repository  https://git.example.com/team/hello.git (main)" in text
    assert "error       pip install failed" in text
    assert "  2026-01-02 03:04:05  ERRORED      failed [x]" in text


def test_deployments_apps_and_nodes_tables() -> None:
    deployments = render.deployments_table([DEPLOYMENT])
    assert deployments.splitlines()[1].split() == [
        "3f1c",
        "hello",
        "ERRORED",
        "0123456789ab",
        "MANUAL",
        "2026-01-02",
        "03:04:05",
        "-",
    ]
    apps = render.apps_table(
        [
            {
                "name": "hello",
                "repoUrl": "r",
                "branch": "main",
                "watching": True,
                "url": None,
                "current": None,
                "latest": {"status": "ERRORED"},
            }
        ]
    )
    assert apps.splitlines()[1].split() == ["hello", "ERRORED", "yes", "main", "-", "r"]
    nodes = render.nodes_table(
        [
            {
                "id": "n1",
                "hostname": "box",
                "status": "READY",
                "cpuCount": 4,
                "memFreeMb": 100,
                "memTotalMb": 200,
                "loadAvg": 0.5,
                "lastSeenAt": None,
                "deployments": [{"id": "x"}],
            }
        ]
    )
    assert "100/200 MiB" in nodes
    assert nodes.splitlines()[1].split()[-1] == "1"


def test_progress_prints_one_plain_line_per_status_change_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(Io(out, io.StringIO(), tty=False))
    for status in ("REQUESTED", "REQUESTED", "BUILDING"):
        progress.update({**DEPLOYMENT, "status": status})
    progress.close()
    assert out.getvalue().splitlines() == ["REQUESTED    failed [x]", "BUILDING     failed [x]"]
