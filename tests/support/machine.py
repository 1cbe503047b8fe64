"""How fast this machine runs Python right now, recorded beside benchmark figures.

The machines of this workplace are virtual: the same kind has run the same code at half the
speed on another day (docs/BENCHMARKS.md). A latency figure alone cannot tell a slower
machine from slower code; a reading of a fixed pure-Python loop beside it can.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import threading
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


def conntrack_active(proc: str = "/proc/sys/net/netfilter/nf_conntrack_count") -> bool:
    """Whether the kernel's connection tracking is loaded, so that it handles every packet,
    loopback's included. Docker's iptables rules load it. With it, every write to a
    loopback socket cost about a quarter more (docs/BENCHMARKS.md, ninth session)."""
    return os.path.exists(proc)


# Whole disks only: partitions repeat their disk's counts; loop, RAM and zram devices hold
# no database or queue files here.
_NOT_DISKS = ("loop", "ram", "zram", "dm-", "md")


def disk_flush_counts(diskstats: str) -> tuple[int, int]:
    """Flush requests completed and milliseconds spent flushing, summed over whole disks,
    from the text of ``/proc/diskstats`` (Linux 5.5 and later count flushes; earlier
    kernels give (0, 0))."""
    rows = [line.split() for line in diskstats.splitlines()]
    names = {fields[2] for fields in rows if len(fields) > 2}
    flushes = flush_ms = 0
    for fields in rows:
        if len(fields) < 20 or fields[2].startswith(_NOT_DISKS) or _partition(fields[2], names):
            continue
        flushes += int(fields[18])
        flush_ms += int(fields[19])
    return flushes, flush_ms


def _partition(name: str, names: set[str]) -> bool:
    # vda1 of vda, nvme0n1p1 of nvme0n1: a listed device's name, then "p" and digits or digits.
    return any(
        name != disk and name.startswith(disk) and re.fullmatch(r"p?\d+", name[len(disk) :])
        for disk in names
    )


class DiskWatch:
    """How long the disk made writers wait, sampled while a benchmark runs.

    Every commit and every quorum-queue write waits for an fsync. On this workplace's
    virtual disks one usually takes well under a millisecond, but calls of 100-220 ms were
    traced in RabbitMQ and PostgreSQL during one run (docs/BENCHMARKS.md, ninth session),
    and the pushes waiting on them make the tail. Two readings, every ``interval`` seconds
    in a thread: the block devices' flush counters (the device's own time), and one fsync
    of an appended block in ``probe_dir`` (the time a writer waits, journal included; an
    append, as a queue's log writes, needs the file system's journal). Averaged over a run,
    a few stalls vanish, so the figures name the worst interval and the slowest probe.
    """

    def __init__(
        self,
        interval: float = 0.1,
        path: str = "/proc/diskstats",
        probe_dir: str | None = "/var/tmp",  # on the disk the databases use here
    ) -> None:
        self.interval = interval
        self.path = path
        self.probe_dir = probe_dir
        self.samples: list[tuple[int, int]] = []
        self.probe_ms: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[int, int]:
        with open(self.path) as f:
            return disk_flush_counts(f.read())

    def _run(self) -> None:
        probe = None
        if self.probe_dir is not None:
            probe = tempfile.NamedTemporaryFile(dir=self.probe_dir, prefix="fsync-probe-")  # noqa: SIM115 - held for the whole run
        try:
            while not self._stop.wait(self.interval):
                self.samples.append(self._read())
                if probe is not None:
                    probe.write(b"\0" * 4096)
                    probe.flush()
                    began = time.perf_counter()
                    os.fdatasync(probe.fileno())
                    self.probe_ms.append((time.perf_counter() - began) * 1000)
        finally:
            if probe is not None:
                probe.close()

    def start(self) -> None:
        """Take the first reading and go on sampling in a thread."""
        self.samples = [self._read()]
        self.probe_ms = []
        self._thread = threading.Thread(target=self._run, name="disk-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, with a last reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self._read())

    def __enter__(self) -> DiskWatch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def figures(self) -> dict[str, float]:
        """The devices' flushes, their mean and worst-interval time, and the probe's
        fsync p99 and maximum (ms)."""
        figures = flush_figures(self.samples)
        if self.probe_ms:
            ordered = sorted(self.probe_ms)
            figures["fsync_probes"] = len(ordered)
            figures["fsync_probe_p99_ms"] = round(ordered[max(int(len(ordered) * 0.99) - 1, 0)], 2)
            figures["fsync_probe_max_ms"] = round(ordered[-1], 2)
        return figures


def flush_figures(samples: list[tuple[int, int]]) -> dict[str, float]:
    """Figures from successive (flushes, flush ms) readings; see :class:`DiskWatch`."""
    (first_n, first_ms), (last_n, last_ms) = samples[0], samples[-1]
    flushes = last_n - first_n
    worst = 0.0
    for (n0, ms0), (n1, ms1) in itertools.pairwise(samples):
        if n1 > n0:
            worst = max(worst, (ms1 - ms0) / (n1 - n0))
    return {
        "disk_flushes": flushes,
        "disk_flush_ms_mean": round((last_ms - first_ms) / flushes, 3) if flushes else 0.0,
        "disk_flush_ms_worst_interval": round(worst, 2),
    }
