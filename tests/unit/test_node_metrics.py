"""A node reports its memory from /proc/meminfo, preferring what is really available."""

from __future__ import annotations

from pathlib import Path

from shipwreck_node.metrics import parse_meminfo, read_capacity

MEMINFO = """MemTotal:       24576000 kB
MemFree:         1024000 kB
MemAvailable:   20480000 kB
Buffers:          102400 kB
"""


def test_meminfo_gives_total_and_available_mib() -> None:
    assert parse_meminfo(MEMINFO) == (24000, 20000)


def test_meminfo_without_memavailable_falls_back_to_memfree() -> None:
    assert parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n") == (2, 1)


def test_capacity_of_this_machine_is_plausible(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    capacity = read_capacity(meminfo)
    assert capacity.cpu_count >= 1
    assert capacity.mem_total_mb == 24000
    assert capacity.load_avg >= 0
