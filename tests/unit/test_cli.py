"""The CLI's own logic: arguments, token lookup, what it prints, how it fails."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipwreck_cli import render
from shipwreck_cli.cli import FollowView, Io, build_parser, main
from shipwreck_cli.client import ApiClient, CliError, _websocket_url, resolve_token
from shipwreck_cli.times import BadTime, parse_time, shield_negative

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


def test_following_on_a_pipe_prints_each_status_once_with_its_time_and_the_log_lines() -> None:
    out = io.StringIO()
    view = FollowView(Io(out, io.StringIO(), tty=False))
    first = {**DEPLOYMENT, "status": "REQUESTED", "history": DEPLOYMENT["history"][:1]}
    view.update(first)
    view.update(first)  # the same again: nothing new
    view.log({"text": "Step 1/3 : FROM python"})
    view.update(DEPLOYMENT)
    view.close()
    assert out.getvalue().splitlines() == [
        "REQUESTED      +0.0s  requested",
        "  | Step 1/3 : FROM python",
        "ERRORED        +0.0s  failed [x]",  # 04:04:05+01:00 is 03:04:05 UTC
    ]


def test_stages_last_until_the_next_one_and_the_current_one_until_now() -> None:
    history = [
        {"status": "CLONING", "at": "2026-01-02T03:04:05+00:00", "message": "a"},
        {"status": "BUILDING", "at": "2026-01-02T03:04:06.500000+00:00", "message": "b"},
    ]
    now = datetime(2026, 1, 2, 3, 4, 16, 500000, tzinfo=UTC)
    assert render.stages(history, now) == [
        ("CLONING", 1.5, "a", True),
        ("BUILDING", 10.0, "b", False),
    ]
    assert render.stage_summary(history) == "CLONING 1.5s"
    assert [render.duration(s) for s in (0.04, 59.9, 125, 3720)] == [
        "0.0s",
        "59.9s",
        "2m05s",
        "1h02m",
    ]


def test_times_are_iso_or_now_or_a_duration_back() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("-5m", now) == now - timedelta(minutes=5)
    assert parse_time("1h30m", now) == now - timedelta(hours=1, minutes=30)
    assert parse_time("2d ago", now) == now - timedelta(days=2)
    assert parse_time("2026-01-01T00:00:00Z", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T02:00:00+02:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    naive = parse_time("2026-01-01T00:00:00", now)
    assert naive == datetime(2026, 1, 1).astimezone().astimezone(UTC)  # local time
    with pytest.raises(BadTime, match="is not a time"):
        parse_time("yesterday-ish", now)


def test_a_bad_time_is_a_usage_error_before_anything_is_asked() -> None:
    code, out, err = _run(["state", "--at", "soon", "--api-url", "http://x", "--token", "t"])
    assert code == 2
    assert out == ""
    assert "'soon' is not a time" in err


def test_new_commands_parse_their_arguments() -> None:
    parser = build_parser()
    assert shield_negative(["diff", "-1h", "-5m", "--at", "-2d"]) == [
        "diff",
        "1h ago",
        "5m ago",
        "--at",
        "2d ago",
    ]
    assert parser.parse_args(["deploy", "u"]).detach is False
    assert parser.parse_args(["deploy", "u", "--follow"]).detach is False
    assert parser.parse_args(["deploy", "u", "--no-follow"]).detach is True
    with pytest.raises(SystemExit):
        parser.parse_args(["deploy", "u", "--follow", "--no-follow"])
    logs = parser.parse_args(["logs", "hello", "-f"])
    assert (logs.target, logs.follow) == ("hello", True)
    assert parser.parse_args(["logs", "hello"]).follow is False
    assert parser.parse_args(["state", "--at", "5m ago"]).at == "5m ago"
    diff = parser.parse_args(["diff", "1h ago"])
    assert (diff.since, diff.until) == ("1h ago", "now")
    assert parser.parse_args(["events", "x"]).target == "x"
    assert parser.parse_args(["projections", "rebuild"]).timeout == 120.0
    with pytest.raises(SystemExit):
        parser.parse_args(["projections"])


def test_events_show_sequence_time_type_and_key_data() -> None:
    data = json.dumps(
        {
            "type": "deployment.running.v1",
            "deployment_id": "d",
            "app": "hello",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "url": "http://hello",
            "warnings": [],
            "scores": [{"a": 1}, {"b": 2}],
            "at": "2026-01-02T03:04:05Z",
        }
    )
    text = render.events_table(
        [
            {
                "sequence": 7,
                "at": "2026-01-02T03:04:05+00:00",
                "type": "deployment.running.v1",
                "data": data,
            }
        ]
    )
    header, row = text.splitlines()
    assert header.split() == ["SEQ", "TIME", "TYPE", "DATA"]
    assert row.split() == [
        "7",
        "2026-01-02",
        "03:04:05",
        "deployment.running.v1",
        "app=hello",
        "commit=0123456789ab",
        "url=http://hello",
        "scores=2",
        "item(s)",
    ]


def test_diff_text_names_apps_current_deployments_and_status_changes() -> None:
    text = render.diff_text(
        {
            "from": "2026-01-02T03:00:00+00:00",
            "to": "2026-01-02T04:00:00+00:00",
            "addedApps": ["other"],
            "removedApps": [],
            "apps": [
                {
                    "name": "hello",
                    "before": {"id": "a1", "commit": "1" * 40},
                    "after": {"id": "b2", "commit": "2" * 40},
                }
            ],
            "deployments": [
                {"id": "a1", "app": "hello", "before": "RUNNING", "after": "SUPERSEDED"},
                {"id": "b2", "app": "hello", "before": None, "after": "RUNNING"},
            ],
        }
    )
    lines = text.splitlines()
    assert lines[0] == "from 2026-01-02 03:00:00 to 2026-01-02 04:00:00 UTC"
    assert "apps added: other" in lines
    assert f"  hello: a1 ({'1' * 12}) -> b2 ({'2' * 12})" in lines
    assert lines[-2].split() == ["a1", "hello", "RUNNING", "SUPERSEDED"]
    assert lines[-1].split() == ["b2", "hello", "-", "RUNNING"]
    empty = render.diff_text({"from": None, "to": None, "apps": [], "deployments": []})
    assert empty.splitlines()[-1] == "(no changes)"


def test_rebuild_text_says_what_the_rebuild_did() -> None:
    counts = {"deployments": 3, "apps": 2, "events": 20}
    done = render.rebuild_text(
        {"complete": True, "seconds": 1.25, "lastPosition": 42, "before": counts, "after": counts}
    )
    assert done.splitlines() == [
        "read model rebuilt in 1.2s from a replay up to position 42: "
        "3 deployments, 2 apps, 20 events",
        "before: 3 deployments, 2 apps, 20 events",
    ]
    pending = render.rebuild_text(
        {"complete": False, "seconds": 60, "lastPosition": None, "before": counts, "after": counts}
    )
    assert pending.startswith("the replay has not finished after 1m00s; the rebuild goes on")


class FakeApi:
    """Answers GraphQL documents with canned data, recording what was asked."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.asked: list[tuple[str, dict[str, Any] | None]] = []

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        self.asked.append((query, variables))
        return self.data


def _command(argv: list[str], api: FakeApi) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    code = asyncio.run(args.run(api, Io(out, io.StringIO(), tty=False), args))
    return code, out.getvalue()


def test_watch_and_unwatch_set_the_apps_watch() -> None:
    api = FakeApi({"setAppWatch": {"name": "hello", "branch": "main", "watching": True}})
    assert _command(["watch", "hello"], api) == (0, "app hello: watching branch main (requested)\n")
    api.data = {"setAppWatch": {"name": "hello", "branch": "main", "watching": False}}
    code, out = _command(["unwatch", "hello"], api)
    assert (code, out) == (0, "app hello: no longer watching branch main (requested)\n")
    assert [variables for query, variables in api.asked] == [
        {"app": "hello", "watching": True},
        {"app": "hello", "watching": False},
    ]
    assert all("setAppWatch(app: $app, watching: $watching)" in q for q, _ in api.asked)


LEDGER_APP = {
    "name": "hello",
    "repoUrl": "git://127.0.0.1/hello",
    "branch": "main",
    "watching": True,
    "ledger": [
        {
            "at": "2026-01-02T03:04:05+00:00",
            "kind": "COMMIT_OBSERVED",
            "accepted": True,
            "reason": "baseline (the head when watching began)",
            "commit": "1" * 40,
            "trigger": "WATCH",
            "deliveryId": None,
            "provider": None,
            "branch": "main",
        },
        {
            "at": "2026-01-02T03:05:00+00:00",
            "kind": "WEBHOOK_REJECTED",
            "accepted": False,
            "reason": "bad signature: X-Hub-Signature-256 does not match the webhook secret",
            "commit": "2" * 40,
            "trigger": "WEBHOOK",
            "deliveryId": "d-1",
            "provider": "github",
            "branch": "main",
        },
    ],
}


def test_ledger_lists_an_apps_entries_newest_last_with_reasons() -> None:
    api = FakeApi({"app": LEDGER_APP})
    code, out = _command(["ledger", "hello", "-n", "5"], api)
    assert code == 0
    assert api.asked[0][1] == {"name": "hello", "limit": 5}
    head, columns, baseline, rejected = out.splitlines()
    assert head == "ledger of hello: git://127.0.0.1/hello branch main (watching)"
    assert columns.split() == [
        "TIME",
        "KIND",
        "VIA",
        "BRANCH",
        "COMMIT",
        "DELIVERY",
        "RESULT",
        "REASON",
    ]
    assert baseline.split()[2:8] == ["COMMIT_OBSERVED", "WATCH", "main", "1" * 12, "-", "accepted"]
    assert rejected.split()[2:9] == [
        "WEBHOOK_REJECTED",
        "WEBHOOK",
        "github",
        "main",
        "2" * 12,
        "d-1",
        "rejected",
    ]
    assert rejected.endswith("bad signature: X-Hub-Signature-256 does not match the webhook secret")


def test_ledger_of_an_unknown_app_fails_with_exit_code_1() -> None:
    with pytest.raises(CliError, match="no app named 'ghost'") as failure:
        _command(["ledger", "ghost"], FakeApi({"app": None}))
    assert failure.value.exit_code == 1
    assert build_parser().parse_args(["ledger", "x"]).limit == 50


def test_rollback_and_cancel_take_their_targets() -> None:
    rollback = build_parser().parse_args(["rollback", "hello", "3f1c", "--no-follow"])
    assert (rollback.app, rollback.deployment, rollback.detach) == ("hello", "3f1c", True)
    api = FakeApi({"rollback": DEPLOYMENT})
    assert _command(["rollback", "hello", "3f1c", "--no-follow"], api) == (
        0,
        "deployment 3f1c\n",
    )
    assert api.asked[0][1] == {"app": "hello", "d": "3f1c"}
    api = FakeApi({"cancelDeployment": {"id": "3f1c"}})
    assert _command(["cancel", "3f1c"], api) == (
        0,
        "cancellation of deployment 3f1c requested\n",
    )


def test_rebuild_text_says_whether_the_ledger_was_replayed() -> None:
    counts = {"deployments": 3, "apps": 2, "events": 20, "ledgerEntries": 7}
    result = {"complete": True, "seconds": 1, "lastPosition": 42, "before": counts}
    done = render.rebuild_text({**result, "after": counts, "ledgerComplete": True})
    assert done.splitlines()[-1] == "ledger: 7 entries replayed from the watcher"
    pending = render.rebuild_text({**result, "after": counts, "ledgerComplete": False})
    assert pending.splitlines()[-1] == (
        "ledger: the watcher's replay has not finished (7 entries so far)"
    )
