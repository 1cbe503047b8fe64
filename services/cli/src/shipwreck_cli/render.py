"""Text the CLI prints: tables, one deployment in detail, status lines. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Row = Sequence[str]


def table(headers: Row, rows: Sequence[Row]) -> str:
    """Columns aligned with two spaces between them; ``(none)`` for no rows."""
    if not rows:
        return "(none)"
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def short_time(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` in UTC (``-`` for none)."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def short_commit(commit: str | None) -> str:
    """The first 12 characters of a commit id (``-`` for none)."""
    return commit[:12] if commit else "-"


def or_dash(value: object) -> str:
    """``-`` for a missing value."""
    return "-" if value is None or value == "" else str(value)


def deployments_table(deployments: Sequence[Mapping[str, Any]]) -> str:
    """The latest deployments, one per line."""
    return table(
        ("ID", "APP", "STATUS", "COMMIT", "TRIGGER", "REQUESTED", "URL"),
        [
            (
                d["id"],
                or_dash(d.get("app")),
                d["status"],
                short_commit(d.get("commit")),
                d["trigger"],
                short_time(d.get("requestedAt")),
                or_dash(d.get("url")),
            )
            for d in deployments
        ],
    )


def apps_table(apps: Sequence[Mapping[str, Any]]) -> str:
    """Every app, one per line; STATUS is its current deployment's, else its latest's."""
    rows = []
    for a in apps:
        shown = a.get("current") or a.get("latest") or {}
        rows.append(
            (
                a["name"],
                or_dash(shown.get("status")),
                "yes" if a["watching"] else "no",
                a["branch"],
                or_dash(a.get("url")),
                a["repoUrl"],
            )
        )
    return table(("NAME", "STATUS", "WATCH", "BRANCH", "URL", "REPO"), rows)


def nodes_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    """Every node, one per line."""
    return table(
        ("ID", "HOSTNAME", "STATUS", "CPUS", "MEM FREE/TOTAL", "LOAD", "LAST SEEN", "RUNNING"),
        [
            (
                n["id"],
                n["hostname"],
                n["status"],
                str(n["cpuCount"]),
                f"{n['memFreeMb']}/{n['memTotalMb']} MiB",
                f"{n['loadAvg']:.2f}",
                short_time(n.get("lastSeenAt")),
                str(len(n.get("deployments") or [])),
            )
            for n in nodes
        ],
    )


def deployment_detail(d: Mapping[str, Any]) -> str:
    """One deployment: its fields, then its history."""
    fields = [
        ("deployment", d["id"]),
        ("app", or_dash(d.get("app"))),
        ("status", d["status"]),
        ("repository", f"{d['repoUrl']} ({d['branch']})"),
        ("commit", or_dash(d.get("commit"))),
        ("trigger", f"{d['trigger']} by {d.get('actor') or '-'}"),
        ("node", or_dash(d.get("node"))),
        ("url", or_dash(d.get("url"))),
        ("requested", short_time(d.get("requestedAt"))),
    ]
    if d.get("error"):
        fields.append(("error", d["error"]))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    history = d.get("history") or []
    if history:
        lines.append("history:")
        lines.extend(
            f"  {short_time(h.get('at'))}  {h['status'].ljust(11)}  {h.get('message', '')}".rstrip()
            for h in history
        )
    return "\n".join(lines)


def status_line(d: Mapping[str, Any]) -> str:
    """One line for a status change: the status and the newest history message."""
    history = d.get("history") or []
    message = history[-1].get("message", "") if history else ""
    return f"{d['status'].ljust(11)}  {message}".rstrip()
