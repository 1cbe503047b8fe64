"""Watching 10,000 (repository, branch) pairs at a 60 s interval: the watcher's CPU share;
and the watcher's decision on one webhook among them.

A local `git daemon` serves 100 repositories with 100 branches each. The watcher's real
poller (dulwich ls-remote, ledger in SQLite) runs two full intervals: the first records
every baseline, the second is the steady state that is measured (process CPU time over
wall time). Figures go to .benchmarks/watcher.jsonl and docs/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from shipwreck_contracts import AppWatchChanged, WebhookReceived
from shipwreck_eventstore import WRITER_AGGREGATE_CACHE, StoreConfig
from shipwreck_watcher.domain import watched_repo_id
from shipwreck_watcher.poller import Poller
from shipwreck_watcher.remote import DulwichLister
from shipwreck_watcher.service import Watcher, WatcherService
from tests.support.machine import python_loop_ms
from tests.support.platform import Platform

REPOS = int(os.environ.get("BENCH_WATCH_REPOS", "100"))
BRANCHES = int(os.environ.get("BENCH_WATCH_BRANCHES", "100"))
INTERVAL = float(os.environ.get("BENCH_WATCH_INTERVAL", "60"))
RESULTS = Path(__file__).resolve().parents[2] / ".benchmarks" / "watcher.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_repos(root: Path) -> None:
    seed = root / "seed"
    subprocess.run(["git", "init", "-q", str(seed)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(seed),
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    sha = subprocess.run(
        ["git", "-C", str(seed), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    for r in range(REPOS):
        bare = root / f"r{r}.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
        # Branches written straight into packed-refs: 10,000 update-ref processes would
        # dominate the set-up.
        lines = ["# pack-refs with: peeled fully-peeled sorted"]
        lines += sorted(f"{sha} refs/heads/b{b}" for b in range(BRANCHES))
        (bare / "packed-refs").write_text("\n".join(lines) + "\n")


def test_watch_ten_thousand_pairs(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    repos.mkdir()
    started = time.perf_counter()
    _make_repos(repos)
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={repos}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--max-connections=256",
            str(repos),
        ],
    )
    app = Watcher(StoreConfig(state_dir=str(tmp_path / "state")))
    try:
        service = WatcherService(app)
        at = datetime.now(UTC)
        for r in range(REPOS):
            for b in range(BRANCHES):
                service.app_watch_changed(
                    AppWatchChanged(
                        app=f"a{r}-{b}",
                        repo_url=f"git://127.0.0.1:{port}/r{r}.git",
                        branch=f"b{b}",
                        watching=True,
                        at=at,
                    ),
                    None,
                )
        setup = time.perf_counter() - started
        lister = DulwichLister(allow_private=True, timeout=10)
        poller = Poller(service, lister, interval=INTERVAL, jitter=0.1, concurrency=32)
        figures = asyncio.run(_run(poller))
    finally:
        daemon.terminate()
        daemon.wait()
        app.close()
    pairs = REPOS * BRANCHES
    record = {
        "benchmark": "watch",
        "pairs": pairs,
        "interval_s": INTERVAL,
        "setup_s": round(setup, 1),
        **figures,
        "checks_per_pair_per_interval": round(figures["steady_checks"] / pairs, 3),
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    assert figures["steady_checks"] > 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(poller: Poller) -> dict[str, float]:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(INTERVAL * 1.1)  # first interval: baselines recorded
    checks0, cpu0, wall0 = poller.checks, _cpu(), time.perf_counter()
    await asyncio.sleep(INTERVAL)
    checks1, cpu1, wall1 = poller.checks, _cpu(), time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    checks = checks1 - checks0
    cpu = cpu1 - cpu0
    return {
        "baseline_checks": checks0,
        "steady_checks": checks,
        "cpu_share_cores": round(cpu / (wall1 - wall0), 3),
        "cpu_ms_per_check": round(cpu / checks * 1000, 3) if checks else -1,
    }


WEBHOOKS = int(os.environ.get("BENCH_WATCH_WEBHOOKS", "300"))


def test_webhook_decision_among_ten_thousand_watched_pairs(platform: Platform) -> None:
    """The watcher's own time for one webhook (``WatcherService.webhook``: find the pairs,
    decide, save the ledger entries in one PostgreSQL transaction) with one pair watched,
    then with REPOS x BRANCHES pairs: what the number of watched pairs adds to the watcher's
    hop of the webhook path (tests/bench/test_bench_webhook.py measures the whole path).

    In process, configured as the watcher service is (PostgreSQL, aggregates cached).
    """
    store = StoreConfig(
        database_url=platform.database_url,
        state_dir=str(platform.state_dir),
        aggregate_cache=WRITER_AGGREGATE_CACHE,
    )
    app = Watcher(store)
    try:
        service = WatcherService(app)
        _watch_pairs(service, repos=1, branches=1)
        one_pair = _webhook_decisions(service, repos=1, branches=1, first=0)
        _watch_pairs(service, repos=REPOS, branches=BRANCHES)
        all_pairs = _webhook_decisions(service, repos=REPOS, branches=BRANCHES, first=WEBHOOKS)
    finally:
        app.close()
    record = {
        "benchmark": "watch_webhook_decision",
        "pairs": REPOS * BRANCHES,
        "one_pair": one_pair,
        "all_pairs": all_pairs,
        "python_loop_ms": python_loop_ms(),
    }
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    assert one_pair["accepted"] == all_pairs["accepted"] == WEBHOOKS


def _url(r: int) -> str:
    return f"https://git.example.org/acme/r{r}.git"


def _watch_pairs(service: WatcherService, *, repos: int, branches: int) -> None:
    at = datetime.now(UTC)
    for r in range(repos):
        for b in range(branches):
            service.app_watch_changed(
                AppWatchChanged(
                    app=f"a{r}-{b}", repo_url=_url(r), branch=f"b{b}", watching=True, at=at
                ),
                None,
            )


def _webhook_decisions(
    service: WatcherService, *, repos: int, branches: int, first: int
) -> dict[str, float]:
    took: list[float] = []
    accepted = 0
    for i in range(first, first + WEBHOOKS):
        r, b = i % repos, (i // repos) % branches
        commit = f"{i:040x}"
        hook = WebhookReceived(
            delivery_id=f"d-{i}",
            provider="github",
            repo_url=_url(r).removesuffix(".git"),  # as GitHub's html_url names it
            ref=f"refs/heads/b{b}",
            commit=commit,
            verified=True,
            received_at=datetime.now(UTC),
        )
        started = time.perf_counter()
        service.webhook(hook, None)
        took.append((time.perf_counter() - started) * 1000)
        accepted += service.heads.get(watched_repo_id(_url(r), f"b{b}")) == commit
    took.sort()
    return {
        "webhooks": WEBHOOKS,
        "accepted": accepted,
        "p50_ms": round(statistics.median(took), 3),
        "p99_ms": round(took[int(len(took) * 0.99) - 1], 3),
    }
