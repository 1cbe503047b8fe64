"""``shipwreck``: deploy from a Git URL and follow it; list deployments, apps and nodes; read
a deployment's logs and stored events; watch or unwatch an app's branch and read its trigger
ledger; look at the platform as it was at a time, or at what changed between two times;
rebuild the api's read model.

Exit codes: 0 success (a followed deployment is RUNNING); 1 the deployment failed (ERRORED,
CANCELLED, or ended without running) or what was asked about does not exist; 2 the request
could not be made (usage, API unreachable, token refused, request refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live as RichLive
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from shipwreck_cli import render
from shipwreck_cli.client import (
    DEFAULT_API_URL,
    ApiClient,
    CliError,
    SubscriptionLost,
    resolve_token,
)
from shipwreck_cli.times import BadTime, parse_time, shield_negative

RUNNING = "RUNNING"
FINAL = frozenset({"RUNNING", "SUPERSEDED", "STOPPED", "ERRORED", "CANCELLED"})
"""Statuses at which following a deployment stops (RUNNING is where a deploy succeeds)."""

DEPLOYMENT = """
  id app repoUrl branch commit status trigger actor node url error requestedAt sequence
  history { status at message }
"""

Q_DEPLOYMENT = f"query($id: ID!) {{ deployment(id: $id) {{ {DEPLOYMENT} }} }}"
Q_DEPLOYMENTS = f"query($app: String, $first: Int) {{ deployments(app: $app, first: $first) {{ {DEPLOYMENT} }} }}"  # noqa: E501
Q_APPS = "{ apps { name repoUrl branch watching url current { status } latest { status } } }"
Q_NODES = """{ nodes { id hostname status cpuCount memTotalMb memFreeMb loadAvg lastSeenAt
  deployments { id } } }"""
Q_APP_LATEST = "query($name: String!) { app(name: $name) { name latest { id } } }"
Q_EVENTS = """query($id: ID!) { deployment(id: $id) { id app status
  events { sequence at type data } } }"""
Q_LOGS = """query($id: ID!) { deployment(id: $id) { id
  logs { attempt stream sequence text } } }"""
Q_STATE = """query($at: DateTime!, $first: Int) { state(at: $at) { at
  apps { name repoUrl branch watching url current { status } latest { status } }
  deployments(first: $first) { id app status commit trigger requestedAt url }
  nodes { id hostname status cpuCount memTotalMb memFreeMb loadAvg lastSeenAt
    deployments { id } } } }"""
Q_DIFF = """query($from: DateTime!, $to: DateTime!) { diff(from: $from, to: $to) { from to
  addedApps removedApps
  apps { name before { id commit } after { id commit } }
  deployments { id app before after } } }"""
Q_READ_MODEL = """{ readModel { rebuilding origin requestedAt finishedAt lastPosition
  counts { deployments apps events ledgerEntries }
  ledger { origin rebuilding lastPosition } } }"""
Q_LEDGER = """query($name: String!, $limit: Int) { app(name: $name) { name repoUrl branch watching
  ledger(limit: $limit) { at kind accepted reason commit trigger deliveryId provider branch } } }"""
M_DEPLOY = f"mutation($input: DeployInput!) {{ deploy(input: $input) {{ {DEPLOYMENT} }} }}"
M_REDEPLOY = f"mutation($app: String!) {{ redeploy(app: $app) {{ {DEPLOYMENT} }} }}"
M_ROLLBACK = f"mutation($app: String!, $d: ID!) {{ rollback(app: $app, deploymentId: $d) {{ {DEPLOYMENT} }} }}"  # noqa: E501
M_CANCEL = f"mutation($id: ID!) {{ cancelDeployment(id: $id) {{ {DEPLOYMENT} }} }}"
M_STOP = "mutation($app: String!) { stopApp(app: $app) { name } }"
M_WATCH = """mutation($app: String!, $watching: Boolean!) {
  setAppWatch(app: $app, watching: $watching) { name branch watching } }"""
M_REBUILD = """mutation { rebuildReadModel { complete ledgerComplete requestedAt finishedAt
  lastPosition seconds before { deployments apps events ledgerEntries }
  after { deployments apps events ledgerEntries } } }"""
S_UPDATES = f"subscription($id: ID!, $after: Int) {{ deploymentUpdates(id: $id, after: $after) {{ {DEPLOYMENT} }} }}"  # noqa: E501
S_LOGS = """subscription($id: ID!, $after: Int, $attempt: Int) {
  deploymentLogs(id: $id, after: $after, attempt: $attempt) { attempt stream sequence text } }"""

RESUBSCRIBE_ATTEMPTS = 5
"""How often a dropped subscription is resumed (with ``after``) before giving up."""


@dataclass
class Io:
    """Where the CLI writes, and whether stdout is a terminal (live display) or not (plain)."""

    out: TextIO
    err: TextIO
    tty: bool

    def print(self, text: str = "") -> None:
        """A line on stdout."""
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        """A line on stderr."""
        print(text, file=self.err, flush=True)


class FollowView:
    """What following a deployment shows: its stages with their durations, and the tail of
    its build log. On a terminal, a live display that redraws itself; otherwise plain lines,
    one per status (with the time since the request) and one per log line."""

    def __init__(self, io: Io, *, tail: int = 10) -> None:
        self.io = io
        self.deployment: Mapping[str, Any] | None = None
        self.tail: deque[str] = deque(maxlen=tail)
        self._printed = 0
        self._live: RichLive | None = None
        if io.tty:
            console = Console(file=io.out)
            self._live = RichLive(
                console=console,
                get_renderable=self._render,
                refresh_per_second=8,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    def update(self, deployment: Mapping[str, Any]) -> None:
        """Show ``deployment``: every status of its history not shown yet."""
        self.deployment = deployment
        history = deployment.get("history") or []
        if self._live is not None:
            self._live.refresh()
            return
        start = render.parse_time(history[0].get("at")) if history else None
        for entry in history[self._printed :]:
            at = render.parse_time(entry.get("at"))
            clock = f"+{render.duration((at - start).total_seconds())}" if at and start else ""
            line = f"{entry['status'].ljust(11)}  {clock.rjust(7)}  {entry.get('message', '')}"
            self.io.print(line.rstrip())
        self._printed = max(self._printed, len(history))

    def log(self, line: Mapping[str, Any]) -> None:
        """Show one log line (the live display keeps only the last few)."""
        text = str(line.get("text", ""))
        if self._live is not None:
            self.tail.append(text)
            self._live.refresh()
        else:
            self.io.print(f"  | {text}".rstrip())

    def _render(self) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(no_wrap=True, min_width=11)  # the longest status, INITIALIZED
        grid.add_column(justify="right", no_wrap=True, min_width=6)
        grid.add_column(overflow="ellipsis", no_wrap=True)
        history = (self.deployment or {}).get("history") or []
        now = datetime.now(UTC)
        shown = render.stages(history, now)
        for i, (status, seconds, message, finished) in enumerate(shown):
            last = i == len(shown) - 1
            final = last and status in FINAL
            icon: RenderableType
            if finished or final:
                ok = status not in {"ERRORED", "CANCELLED"}
                icon = Text("✓" if ok else "✗", style="green" if ok else "red")
            else:
                icon = Spinner("dots", style="cyan")
            took = "" if final else render.duration(seconds)
            grid.add_row(icon, Text(status, style="bold"), took, Text(message))
        if not shown:
            grid.add_row(Spinner("dots"), Text("waiting for the first status"), "", "")
        if not self.tail:
            return grid
        lines = [
            Text(f"  │ {t}", style="dim", no_wrap=True, overflow="ellipsis") for t in self.tail
        ]
        return Group(grid, *lines)

    def close(self) -> None:
        """Stop the live display, leaving its last state on the screen."""
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None


# --- commands ----------------------------------------------------------------------------------


async def _updates(
    client: ApiClient, deployment_id: str, view: FollowView, *, poll_interval: float
) -> Mapping[str, Any]:
    """Follow the deployment's status until it is final, resuming a dropped subscription."""
    seen: int | None = None
    failures = 0
    while failures <= RESUBSCRIBE_ATTEMPTS:
        try:
            variables = {"id": deployment_id, "after": seen}
            async for data in client.subscribe(S_UPDATES, variables):
                deployment = data["deploymentUpdates"]
                view.update(deployment)
                seen = deployment.get("sequence", seen)
                failures = 0
                if deployment["status"] in FINAL:
                    return deployment  # type: ignore[no-any-return]
            break  # completed: the deployment is final, the query below says how
        except SubscriptionLost:
            # The websocket dropped (proxy, api restart): resume after what was seen.
            failures += 1
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))
    while True:
        data = await client.execute(Q_DEPLOYMENT, {"id": deployment_id})
        deployment = data["deployment"]
        if deployment is None:
            raise CliError(f"no deployment with id {deployment_id}", exit_code=1)
        view.update(deployment)
        if deployment["status"] in FINAL:
            return deployment  # type: ignore[no-any-return]
        await asyncio.sleep(poll_interval)


async def stream_logs(
    client: ApiClient, deployment_id: str, on_line: Callable[[Mapping[str, Any]], None]
) -> None:
    """Every log line of the deployment until its stream ends, resuming after the last line
    received when the subscription drops (the api sends exactly what was missed)."""
    cursor: tuple[int, int] | None = None
    failures = 0
    while True:
        variables: dict[str, Any] = {"id": deployment_id}
        if cursor is not None:
            variables.update(attempt=cursor[0], after=cursor[1])
        try:
            async for data in client.subscribe(S_LOGS, variables):
                line = data["deploymentLogs"]
                on_line(line)
                cursor = (int(line.get("attempt", 1)), int(line["sequence"]))
                failures = 0
            return
        except SubscriptionLost:
            failures += 1
            if failures > RESUBSCRIBE_ATTEMPTS:
                raise
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))


async def follow(
    client: ApiClient, deployment_id: str, io: Io, *, poll_interval: float = 1.0
) -> Mapping[str, Any]:
    """Follow a deployment until RUNNING or a terminal status, with its build log; returns it."""
    view = FollowView(io)

    async def logs() -> None:
        with contextlib.suppress(CliError):  # the log is a bonus: never fail a deploy over it
            await stream_logs(client, deployment_id, view.log)

    lines = asyncio.create_task(logs())
    try:
        final = await _updates(client, deployment_id, view, poll_interval=poll_interval)
        # The node sends lines straight to the api and the status goes via the orchestrator:
        # the last lines may come just after it. The stream ends a moment after a terminal
        # status; a RUNNING app's goes on with its output, so only wait briefly.
        grace = 1.0 if final["status"] != RUNNING else 0.3
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(lines), grace)
        return final
    finally:
        lines.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lines
        view.close()


async def _requested(
    client: ApiClient, io: Io, deployment: Mapping[str, Any], *, detach: bool
) -> int:
    io.print(f"deployment {deployment['id']}")
    if detach:
        return 0
    final = await follow(client, deployment["id"], io)
    took = render.stage_summary(final.get("history") or [])
    if took:
        io.print(f"took: {took}")
    if final["status"] == RUNNING:
        io.print(f"{final.get('app') or 'app'} is running at {final.get('url') or '?'}")
        return 0
    history = final.get("history") or []
    reason = final.get("error") or (history[-1].get("message") if history else "")
    io.error(f"deployment {final['id']} {final['status']}: {reason or 'no reason given'}")
    return 1


async def cmd_deploy(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Deploy a repository branch and follow it."""
    variables = {"input": {"repoUrl": args.url, "branch": args.branch, "watch": args.watch}}
    data = await client.execute(M_DEPLOY, variables)
    return await _requested(client, io, data["deploy"], detach=args.detach)


async def cmd_redeploy(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Deploy an app's branch head again and follow it."""
    data = await client.execute(M_REDEPLOY, {"app": args.app})
    return await _requested(client, io, data["redeploy"], detach=args.detach)


async def cmd_rollback(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Deploy the commit of an earlier deployment again and follow it."""
    data = await client.execute(M_ROLLBACK, {"app": args.app, "d": args.deployment})
    return await _requested(client, io, data["rollback"], detach=args.detach)


async def cmd_cancel(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Ask for a deployment in progress to be cancelled."""
    data = await client.execute(M_CANCEL, {"id": args.id})
    io.print(f"cancellation of deployment {data['cancelDeployment']['id']} requested")
    return 0


async def cmd_stop(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Stop an app."""
    data = await client.execute(M_STOP, {"app": args.app})
    io.print(f"stop of app {data['stopApp']['name']} requested")
    return 0


async def cmd_watch(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Turn redeploy-on-new-commit on (watch) or off (unwatch) for an app."""
    data = await client.execute(M_WATCH, {"app": args.app, "watching": args.watching})
    app = data["setAppWatch"]
    what = "watching" if args.watching else "no longer watching"
    io.print(f"app {app['name']}: {what} branch {app['branch']} (requested)")
    return 0


async def cmd_ledger(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Why an app's deployments were (or were not) triggered: its ledger, newest last."""
    data = await client.execute(Q_LEDGER, {"name": args.app, "limit": args.limit})
    app = data["app"]
    if app is None:
        raise CliError(f"no app named {args.app!r}", exit_code=1)
    io.print(render.ledger_text(app))
    return 0


async def cmd_status(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """One deployment in detail, or the latest deployments as a table."""
    if args.id:
        data = await client.execute(Q_DEPLOYMENT, {"id": args.id})
        if data["deployment"] is None:
            raise CliError(f"no deployment with id {args.id}", exit_code=1)
        io.print(render.deployment_detail(data["deployment"]))
        return 0
    data = await client.execute(Q_DEPLOYMENTS, {"app": args.app, "first": args.limit})
    io.print(render.deployments_table(data["deployments"]))
    return 0


async def cmd_apps(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Every app."""
    data = await client.execute(Q_APPS)
    io.print(render.apps_table(data["apps"]))
    return 0


async def cmd_nodes(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Every node."""
    data = await client.execute(Q_NODES)
    io.print(render.nodes_table(data["nodes"]))
    return 0


async def _deployment_id(client: ApiClient, ref: str) -> str:
    """A deployment id as given, or the newest deployment of the app named ``ref``."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    data = await client.execute(Q_APP_LATEST, {"name": ref})
    app = data["app"]
    if app is None:
        raise CliError(f"{ref!r} is neither a deployment id nor an app name", exit_code=1)
    if app["latest"] is None:
        raise CliError(f"app {ref} has no deployment", exit_code=1)
    return str(app["latest"]["id"])


async def cmd_logs(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """A deployment's output: the lines the api keeps, or (-f) those then live ones."""
    deployment_id = await _deployment_id(client, args.target)
    if args.follow:
        await stream_logs(client, deployment_id, lambda line: io.print(str(line["text"])))
        return 0
    data = await client.execute(Q_LOGS, {"id": deployment_id})
    if data["deployment"] is None:
        raise CliError(f"no deployment with id {deployment_id}", exit_code=1)
    for line in data["deployment"]["logs"]:
        io.print(str(line["text"]))
    return 0


async def cmd_events(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """A deployment's stored timeline: every event, in order."""
    deployment_id = await _deployment_id(client, args.target)
    data = await client.execute(Q_EVENTS, {"id": deployment_id})
    deployment = data["deployment"]
    if deployment is None:
        raise CliError(f"no deployment with id {deployment_id}", exit_code=1)
    io.print(
        f"deployment {deployment['id']} ({deployment.get('app') or '-'}, {deployment['status']})"
    )
    io.print(render.events_table(deployment["events"]))
    return 0


def _time(text: str) -> str:
    try:
        return parse_time(text).isoformat()
    except BadTime as e:
        raise CliError(str(e)) from None


async def cmd_state(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """The platform as it was at a moment."""
    data = await client.execute(Q_STATE, {"at": _time(args.at), "first": args.limit})
    io.print(render.state_text(data["state"]))
    return 0


async def cmd_diff(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """What changed between two moments."""
    data = await client.execute(Q_DIFF, {"from": _time(args.since), "to": _time(args.until)})
    io.print(render.diff_text(data["diff"]))
    return 0


async def cmd_projections_rebuild(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Drop the api's read model and rebuild it from a replay of the orchestrator's log."""
    # The api answers when the replay has finished (or after its own timeout).
    client.timeout = max(client.timeout, args.timeout)
    data = await client.execute(M_REBUILD)
    result = data["rebuildReadModel"]
    io.print(render.rebuild_text(result))
    return 0 if result["complete"] else 1


async def cmd_projections_status(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """Where the api's read model stands."""
    data = await client.execute(Q_READ_MODEL)
    model = data["readModel"]
    state = "rebuilding" if model["rebuilding"] else "ready"
    io.print(
        f"read model: {state} (from {model['origin']}, up to position "
        f"{render.or_dash(model.get('lastPosition'))})"
    )
    io.print(render.counts_text(model["counts"]))
    ledger = model.get("ledger")
    if ledger is not None:
        io.print(
            f"ledger: {'rebuilding' if ledger['rebuilding'] else 'ready'} (from "
            f"{ledger['origin']}, up to position {render.or_dash(ledger.get('lastPosition'))}), "
            f"{model['counts'].get('ledgerEntries', 0)} entries"
        )
    return 0


# --- arguments ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand also takes --api-url and --token)."""
    # SUPPRESS, so that an option given before the subcommand is not reset after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        default=argparse.SUPPRESS,
        help=f"the API (default: $SHIPWRECK_API_URL or {DEFAULT_API_URL})",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="the bearer token (default: $SHIPWRECK_API_TOKEN, else .shipwreck/api-token)",
    )
    parser = argparse.ArgumentParser(
        prog="shipwreck",
        description="Deploy applications from Git URLs with Shipwreck.",
        epilog=(
            "exit codes: 0 success (deployment RUNNING), 1 deployment failed or not found, "
            "2 the request could not be made"
        ),
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    deploy = commands.add_parser(
        "deploy", parents=[common], help="deploy a Git repository and follow it until it runs"
    )
    deploy.add_argument("url", help="the repository URL (https://, ssh://, git://)")
    deploy.add_argument("--branch", "-b", default="main", help="the branch (default: main)")
    deploy.add_argument(
        "--no-watch",
        dest="watch",
        action="store_false",
        help="do not redeploy when the branch gets new commits",
    )
    _detach_option(deploy)
    deploy.set_defaults(run=cmd_deploy)

    redeploy = commands.add_parser(
        "redeploy", parents=[common], help="deploy an app's branch head again"
    )
    redeploy.add_argument("app")
    _detach_option(redeploy)
    redeploy.set_defaults(run=cmd_redeploy)

    rollback = commands.add_parser(
        "rollback", parents=[common], help="deploy the commit of an earlier deployment again"
    )
    rollback.add_argument("app")
    rollback.add_argument("deployment", help="the id of the deployment to go back to")
    _detach_option(rollback)
    rollback.set_defaults(run=cmd_rollback)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a deployment")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_cancel)

    stop = commands.add_parser("stop", parents=[common], help="stop an app")
    stop.add_argument("app")
    stop.set_defaults(run=cmd_stop)

    watch = commands.add_parser(
        "watch", parents=[common], help="redeploy an app when its branch gets a new commit"
    )
    watch.add_argument("app")
    watch.set_defaults(run=cmd_watch, watching=True)

    unwatch = commands.add_parser(
        "unwatch", parents=[common], help="stop redeploying an app on new commits"
    )
    unwatch.add_argument("app")
    unwatch.set_defaults(run=cmd_watch, watching=False)

    ledger = commands.add_parser(
        "ledger",
        parents=[common],
        help="why an app was (or was not) redeployed: commits seen, webhooks, rollback pins",
    )
    ledger.add_argument("app")
    ledger.add_argument(
        "--limit", "-n", type=int, default=50, help="the newest N entries (default: 50)"
    )
    ledger.set_defaults(run=cmd_ledger)

    status = commands.add_parser(
        "status", parents=[common], help="one deployment, or the latest deployments"
    )
    status.add_argument("id", nargs="?", help="a deployment id (default: list the latest)")
    status.add_argument("--app", help="only this app's deployments")
    status.add_argument("--limit", "-n", type=int, default=20, help="how many (default: 20)")
    status.set_defaults(run=cmd_status)

    apps = commands.add_parser("apps", parents=[common], help="list apps")
    apps.set_defaults(run=cmd_apps)

    nodes = commands.add_parser("nodes", parents=[common], help="list worker nodes")
    nodes.set_defaults(run=cmd_nodes)

    logs = commands.add_parser(
        "logs", parents=[common], help="a deployment's output (an app's newest deployment)"
    )
    logs.add_argument("target", metavar="APP|ID", help="a deployment id, or an app name")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="then live lines, until it finishes"
    )
    logs.set_defaults(run=cmd_logs)

    events = commands.add_parser(
        "events", parents=[common], help="a deployment's stored timeline of events"
    )
    events.add_argument("target", metavar="ID", help="a deployment id (or an app name)")
    events.set_defaults(run=cmd_events)

    state = commands.add_parser(
        "state", parents=[common], help="apps, deployments and nodes as they were at a time"
    )
    state.add_argument("--at", required=True, help=TIME_HELP)
    state.add_argument(
        "--limit", "-n", type=int, default=20, help="deployments to list (default: 20)"
    )
    state.set_defaults(run=cmd_state)

    diff = commands.add_parser("diff", parents=[common], help="what changed between two times")
    diff.add_argument("since", metavar="T1", help=TIME_HELP)
    diff.add_argument("until", metavar="T2", nargs="?", default="now", help="(default: now)")
    diff.set_defaults(run=cmd_diff)

    projections = commands.add_parser(
        "projections", parents=[common], help="the api's read model (a projection of events)"
    )
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild", parents=[common], help="drop the read model and rebuild it from a replay"
    )
    rebuild.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the api (default: 120)"
    )
    rebuild.set_defaults(run=cmd_projections_rebuild)
    status_ = actions.add_parser("status", parents=[common], help="where the read model stands")
    status_.set_defaults(run=cmd_projections_status)
    return parser


TIME_HELP = "ISO 8601 (2026-01-02T03:04:05Z; local time without an offset), now, or -5m/-2h/-1d"


def _detach_option(parser: argparse.ArgumentParser) -> None:
    follow = parser.add_mutually_exclusive_group()
    follow.add_argument(
        "--follow",
        dest="detach",
        action="store_false",
        help="follow it: stages with durations and the build log (the default)",
    )
    follow.add_argument(
        "--no-follow",
        dest="detach",
        action="store_true",
        help="print the deployment id and return at once",
    )
    parser.set_defaults(detach=False)


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command line; returns the exit code."""
    env = os.environ if environ is None else environ
    stdout, stderr = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(shield_negative(list(sys.argv[1:] if argv is None else argv)))
    io = Io(stdout, stderr, tty=stdout.isatty())
    try:
        client = ApiClient(
            api_url=getattr(args, "api_url", None)
            or env.get("SHIPWRECK_API_URL")
            or DEFAULT_API_URL,
            token=resolve_token(getattr(args, "token", None), env),
        )
        code: int = asyncio.run(args.run(client, io, args))
    except CliError as e:
        io.error(f"shipwreck: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        io.error("shipwreck: interrupted (the deployment itself goes on)")
        return 130
    return code
