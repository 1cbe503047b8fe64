"""``shipwreck``: deploy from a Git URL and follow it; list deployments, apps and nodes.

Exit codes: 0 success (a followed deployment is RUNNING); 1 the deployment failed (ERRORED,
CANCELLED, or ended without running) or what was asked about does not exist; 2 the request
could not be made (usage, API unreachable, token refused, request refused).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from shipwreck_cli import render
from shipwreck_cli.client import (
    DEFAULT_API_URL,
    ApiClient,
    CliError,
    SubscriptionLost,
    resolve_token,
)

RUNNING = "RUNNING"
FINAL = frozenset({"RUNNING", "SUPERSEDED", "STOPPED", "ERRORED", "CANCELLED"})
"""Statuses at which following a deployment stops (RUNNING is where a deploy succeeds)."""

DEPLOYMENT = """
  id app repoUrl branch commit status trigger actor node url error requestedAt
  history { status at message }
"""

Q_DEPLOYMENT = f"query($id: ID!) {{ deployment(id: $id) {{ {DEPLOYMENT} }} }}"
Q_DEPLOYMENTS = f"query($app: String, $first: Int) {{ deployments(app: $app, first: $first) {{ {DEPLOYMENT} }} }}"  # noqa: E501
Q_APPS = "{ apps { name repoUrl branch watching url current { status } latest { status } } }"
Q_NODES = """{ nodes { id hostname status cpuCount memTotalMb memFreeMb loadAvg lastSeenAt
  deployments { id } } }"""
M_DEPLOY = f"mutation($input: DeployInput!) {{ deploy(input: $input) {{ {DEPLOYMENT} }} }}"
M_REDEPLOY = f"mutation($app: String!) {{ redeploy(app: $app) {{ {DEPLOYMENT} }} }}"
M_ROLLBACK = f"mutation($app: String!, $d: ID!) {{ rollback(app: $app, deploymentId: $d) {{ {DEPLOYMENT} }} }}"  # noqa: E501
M_CANCEL = f"mutation($id: ID!) {{ cancelDeployment(id: $id) {{ {DEPLOYMENT} }} }}"
M_STOP = "mutation($app: String!) { stopApp(app: $app) { name } }"
S_UPDATES = f"subscription($id: ID!) {{ deploymentUpdates(id: $id) {{ {DEPLOYMENT} }} }}"
S_LOGS = "subscription($id: ID!) { deploymentLogs(id: $id) { stream sequence text } }"


@dataclass
class Io:
    """Where the CLI writes, and whether stdout is a terminal (live line) or not (plain)."""

    out: TextIO
    err: TextIO
    tty: bool

    def print(self, text: str = "") -> None:
        """A line on stdout."""
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        """A line on stderr."""
        print(text, file=self.err, flush=True)


class Progress:
    """Shows a deployment's status changes: one live line on a terminal, else plain lines."""

    def __init__(self, io: Io) -> None:
        self.io = io
        self.last: str | None = None
        self._status: Status | None = None
        if io.tty:
            self._status = Console(file=io.out).status("waiting for the first status")
            self._status.start()

    def update(self, deployment: Mapping[str, Any]) -> None:
        """Show ``deployment``'s status if it changed."""
        if deployment["status"] == self.last:
            return
        self.last = deployment["status"]
        line = render.status_line(deployment)
        if self._status is not None:
            self._status.update(escape(line))
        else:
            self.io.print(line)

    def close(self) -> None:
        """Stop the live line (its last state is printed by the caller)."""
        if self._status is not None:
            self._status.stop()
            self._status = None


# --- commands ----------------------------------------------------------------------------------


async def follow(
    client: ApiClient, deployment_id: str, io: Io, *, poll_interval: float = 1.0
) -> Mapping[str, Any]:
    """Follow a deployment until RUNNING or a terminal status; returns it then."""
    progress = Progress(io)
    try:
        try:
            async for data in client.subscribe(S_UPDATES, {"id": deployment_id}):
                deployment = data["deploymentUpdates"]
                progress.update(deployment)
                if deployment["status"] in FINAL:
                    return deployment  # type: ignore[no-any-return]
        except SubscriptionLost:
            pass  # the websocket dropped (proxy, restart): carry on by asking
        while True:
            data = await client.execute(Q_DEPLOYMENT, {"id": deployment_id})
            deployment = data["deployment"]
            if deployment is None:
                raise CliError(f"no deployment with id {deployment_id}", exit_code=1)
            progress.update(deployment)
            if deployment["status"] in FINAL:
                return deployment  # type: ignore[no-any-return]
            await asyncio.sleep(poll_interval)
    finally:
        progress.close()


async def _requested(
    client: ApiClient, io: Io, deployment: Mapping[str, Any], *, detach: bool
) -> int:
    io.print(f"deployment {deployment['id']}")
    if detach:
        return 0
    final = await follow(client, deployment["id"], io)
    if io.tty:
        io.print(render.status_line(final))
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


async def cmd_logs(client: ApiClient, io: Io, args: argparse.Namespace) -> int:
    """A deployment's output so far, then live, until shortly after it finishes."""
    async for data in client.subscribe(S_LOGS, {"id": args.id}):
        io.print(data["deploymentLogs"]["text"])
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

    logs = commands.add_parser("logs", parents=[common], help="a deployment's output, live")
    logs.add_argument("id")
    logs.set_defaults(run=cmd_logs)
    return parser


def _detach_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-follow",
        dest="detach",
        action="store_true",
        help="print the deployment id and return at once",
    )


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
    args = build_parser().parse_args(argv)
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
