"""The machine readings benchmarks record beside their figures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support.machine import (
    DiskWatch,
    conntrack_active,
    cpu_ms_per,
    cpu_seconds,
    cpu_snapshot,
    disk_flush_counts,
    flush_figures,
)


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_spent_between_two_snapshots_is_counted_per_process() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\ntime.sleep(30)",
        ],
    )
    try:
        before = cpu_snapshot({"child": child.pid})
        _spin(0.2)
        time.sleep(1.0)  # the child spins its 0.3 s meanwhile
        after = cpu_snapshot({"child": child.pid})
    finally:
        child.kill()
        child.wait()
    per = cpu_ms_per(before, after, 2)
    assert 90 <= per["bench"] <= 200  # 0.2 s over two units, give or take a clock tick
    assert 0 < per["child"] <= 250  # its 0.3 s spin and start-up, over two units
    assert set(per) == {"child", "bench", "rabbitmq", "postgresql"}


def test_a_process_that_is_gone_has_spent_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) == 0.0


DISKSTATS = """\
   7       0 loop0 10 0 20 1 0 0 0 0 0 4 1 0 0 0 0 0 0
 254       0 vda 220952 23538 5855762 3398418 1177831 250870 15443304 407299 1 274876 3869283 \
122876 78 7524648 39625 335915 23940
 254       1 vda1 220000 23000 5855000 3398000 1177000 250000 15443000 407000 0 274000 \
3869000 0 0 0 0 0 0
 259       0 nvme0n1 5 0 10 1 5 0 10 1 0 2 2 0 0 0 0 85 60
 252       0 zram0 9 0 72 0 2 0 16 0 0 0 0 0 0 0 0 0 0
"""


def test_disk_flushes_are_summed_over_whole_disks_only() -> None:
    # vda and nvme0n1 count; the partition vda1 repeats vda, loop and zram hold no data.
    assert disk_flush_counts(DISKSTATS) == (335915 + 85, 23940 + 60)


def test_a_kernel_without_flush_counts_reads_as_none() -> None:
    old = " 254       0 vda 220952 23538 5855762 3398418 1177831 250870 15443304 407299 1 2 3\n"
    assert disk_flush_counts(old) == (0, 0)


def test_a_flush_stall_shows_in_the_worst_interval_not_the_mean() -> None:
    # 100 fast flushes in each of nine intervals, then one interval with two slow ones.
    samples = [(0, 0)]
    for _ in range(9):
        n, ms = samples[-1]
        samples.append((n + 100, ms + 10))
    n, ms = samples[-1]
    samples.append((n + 2, ms + 400))
    figures = flush_figures(samples)
    assert figures["disk_flushes"] == 902
    assert figures["disk_flush_ms_mean"] == round(490 / 902, 3)
    assert figures["disk_flush_ms_worst_interval"] == 200.0


def test_the_sampler_reads_the_counters_until_it_stops(tmp_path: Path) -> None:
    stats = tmp_path / "diskstats"
    stats.write_text(DISKSTATS)
    with DiskWatch(interval=0.01, path=str(stats), probe_dir=str(tmp_path)) as sampler:
        time.sleep(0.05)
        stats.write_text(DISKSTATS.replace(" 335915 23940", " 335925 24940"))
        time.sleep(0.05)
    figures = sampler.figures()
    assert figures["disk_flushes"] == 10
    assert figures["disk_flush_ms_mean"] == 100.0
    assert len(sampler.samples) >= 4
    # Each interval also timed one fsync of an appended block, and took its file away.
    assert figures["fsync_probes"] == len(sampler.probe_ms) >= 3
    assert 0 < figures["fsync_probe_p99_ms"] <= figures["fsync_probe_max_ms"]
    assert [p.name for p in tmp_path.iterdir()] == ["diskstats"]


def test_conntrack_is_reported_as_loaded_when_its_counter_exists(tmp_path: Path) -> None:
    counter = tmp_path / "nf_conntrack_count"
    assert conntrack_active(str(counter)) is False
    counter.write_text("75\n")
    assert conntrack_active(str(counter)) is True
