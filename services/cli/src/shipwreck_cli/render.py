"""Text the CLI prints: tables, one deployment in detail, status lines. Pure functions."""

from __future__ import annotations

import json
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


def parse_time(value: str | None) -> datetime | None:
    """An ISO timestamp from the API (None if missing or unreadable)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """A short duration: ``0.4s``, ``12.3s``, ``2m05s``, ``1h02m``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(seconds) // 60, 60)
    return f"{hours}h{rest:02d}m"


Stage = tuple[str, float, str, bool]
"""A status a deployment went through: (status, seconds in it, message, finished)."""


def stages(history: Sequence[Mapping[str, Any]], now: datetime | None = None) -> list[Stage]:
    """Each status of ``history`` with how long it lasted (the last one: until ``now``)."""
    out: list[Stage] = []
    for i, entry in enumerate(history):
        started = parse_time(entry.get("at"))
        nxt = parse_time(history[i + 1].get("at")) if i + 1 < len(history) else None
        finished = nxt is not None
        until = nxt or now
        seconds = (until - started).total_seconds() if started and until else 0.0
        out.append((entry["status"], seconds, entry.get("message", ""), finished))
    return out


def stage_summary(history: Sequence[Mapping[str, Any]]) -> str:
    """One line with the time each finished stage took, e.g. ``CLONING 1.2s, BUILDING 30.5s``."""
    parts = [f"{status} {duration(s)}" for status, s, _, done in stages(history) if done]
    return ", ".join(parts)


_SKIPPED_DATA = frozenset({"type", "deployment_id", "at"})


def event_details(data: str) -> str:
    """The key facts of an event's JSON, as ``key=value`` pairs."""
    try:
        fields = json.loads(data)
    except json.JSONDecodeError:
        return data
    if not isinstance(fields, dict):
        return str(fields)
    parts = []
    for key, value in fields.items():
        if key in _SKIPPED_DATA or value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            shown = f"{len(value)} item(s)"
        elif key == "commit" and isinstance(value, str):
            shown = short_commit(value)
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def events_table(events: Sequence[Mapping[str, Any]]) -> str:
    """A deployment's stored timeline: sequence, time, type and the key data of each event."""
    return table(
        ("SEQ", "TIME", "TYPE", "DATA"),
        [
            (
                str(e["sequence"]),
                short_time(e.get("at")),
                e["type"],
                event_details(e.get("data") or "{}"),
            )
            for e in events
        ],
    )


def state_text(state: Mapping[str, Any]) -> str:
    """The platform at a moment: its apps, newest deployments and nodes."""
    deployments = state.get("deployments") or []
    return "\n".join(
        [
            f"state at {short_time(state.get('at'))} UTC",
            "",
            "apps:",
            apps_table(state.get("apps") or []),
            "",
            f"deployments (newest {len(deployments)}):",
            deployments_table(deployments),
            "",
            "nodes:",
            nodes_table(state.get("nodes") or []),
        ]
    )


def _deployment_ref(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "(none)"
    return f"{d['id']} ({short_commit(d.get('commit'))})"


def diff_text(diff: Mapping[str, Any]) -> str:
    """What changed between two moments: apps, current deployments, deployment statuses."""
    lines = [f"from {short_time(diff.get('from'))} to {short_time(diff.get('to'))} UTC"]
    added, removed = diff.get("addedApps") or [], diff.get("removedApps") or []
    apps, deployments = diff.get("apps") or [], diff.get("deployments") or []
    if not (added or removed or apps or deployments):
        lines.append("(no changes)")
        return "\n".join(lines)
    if added:
        lines.append(f"apps added: {', '.join(added)}")
    if removed:
        lines.append(f"apps removed: {', '.join(removed)}")
    if apps:
        lines.append("current deployment changed:")
        for a in apps:
            before, after = _deployment_ref(a.get("before")), _deployment_ref(a.get("after"))
            lines.append(f"  {a['name']}: {before} -> {after}")
    if deployments:
        lines.append("deployment status changed:")
        rows = [
            (d["id"], or_dash(d.get("app")), or_dash(d.get("before")), or_dash(d.get("after")))
            for d in deployments
        ]
        lines.extend(
            "  " + line for line in table(("ID", "APP", "BEFORE", "AFTER"), rows).splitlines()
        )
    return "\n".join(lines)


def counts_text(counts: Mapping[str, Any]) -> str:
    """``N deployments, N apps, N events``."""
    return f"{counts['deployments']} deployments, {counts['apps']} apps, {counts['events']} events"


def rebuild_text(result: Mapping[str, Any]) -> str:
    """What a rebuild of the read model did."""
    if result["complete"]:
        head = (
            f"read model rebuilt in {duration(result['seconds'])} from a replay up to position "
            f"{or_dash(result.get('lastPosition'))}: {counts_text(result['after'])}"
        )
    else:
        head = (
            f"the replay has not finished after {duration(result['seconds'])}; the rebuild goes "
            f"on (so far: {counts_text(result['after'])})"
        )
    lines = [head, f"before: {counts_text(result['before'])}"]
    if "ledgerComplete" in result:
        entries = result["after"].get("ledgerEntries", 0)
        lines.append(
            f"ledger: {entries} entries replayed from the watcher"
            if result["ledgerComplete"]
            else f"ledger: the watcher's replay has not finished ({entries} entries so far)"
        )
    return "\n".join(lines)


def _ledger_via(entry: Mapping[str, Any]) -> str:
    trigger = or_dash(entry.get("trigger"))
    return f"{trigger} {entry['provider']}" if entry.get("provider") else trigger


def ledger_text(app: Mapping[str, Any]) -> str:
    """An app's trigger ledger: a heading, then one entry per line, newest last."""
    watching = "watching" if app.get("watching") else "not watching"
    head = f"ledger of {app['name']}: {app['repoUrl']} branch {app['branch']} ({watching})"
    rows = [
        (
            short_time(e.get("at")),
            e["kind"],
            _ledger_via(e),
            or_dash(e.get("branch")),
            short_commit(e.get("commit")),
            or_dash(e.get("deliveryId")),
            "accepted" if e.get("accepted", True) else "rejected",
            e.get("reason") or "",
        )
        for e in app.get("ledger") or []
    ]
    columns = ("TIME", "KIND", "VIA", "BRANCH", "COMMIT", "DELIVERY", "RESULT", "REASON")
    return f"{head}\n{table(columns, rows)}"
