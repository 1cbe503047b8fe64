"""How fast this machine runs Python right now, recorded beside benchmark figures.

The machines of this workplace are virtual: the same kind has run the same code at half the
speed on another day (docs/BENCHMARKS.md). A latency figure alone cannot tell a slower
machine from slower code; a reading of a fixed pure-Python loop beside it can.
"""

from __future__ import annotations

import os
import time

LOOP_ITERATIONS = 1_000_000


def python_loop_ms(rounds: int = 5) -> float:
    """Milliseconds for a fixed loop of integer additions, best of ``rounds``.

    The best round is the machine's speed; the others carry whatever else ran meanwhile.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(LOOP_ITERATIONS):
            total += i
        best = min(best, time.perf_counter() - start)
    assert total == LOOP_ITERATIONS * (LOOP_ITERATIONS - 1) // 2
    return round(best * 1000, 1)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(*names: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in names:
                        pids.append(int(entry))
            except OSError:
                continue  # ended meanwhile
    return pids


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process, by this one ("bench"), by RabbitMQ
    (its Erlang VM) and by every PostgreSQL process together: two snapshots around a run
    give what each spent on it (PostgreSQL's includes anything else it served meanwhile)."""
    taken = {name: cpu_seconds(pid) for name, pid in processes.items()}
    taken["bench"] = cpu_seconds(os.getpid())
    taken["rabbitmq"] = sum(cpu_seconds(p) for p in _pids_named("beam.smp"))
    taken["postgresql"] = sum(cpu_seconds(p) for p in _pids_named("postgres"))
    return taken


def cpu_ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds of CPU per unit of work (``count`` units) by process, between two
    :func:`cpu_snapshot` readings."""
    return {name: round((after[name] - before[name]) * 1000 / count, 2) for name in after}
