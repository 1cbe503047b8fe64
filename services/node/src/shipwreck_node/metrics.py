"""What a node reports about itself: CPU count, memory and load, read from the kernel."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Capacity:
    """A snapshot of this machine's size and load."""

    cpu_count: int
    mem_total_mb: int
    mem_free_mb: int
    load_avg: float


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) in MiB from the text of /proc/meminfo."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])  # kB
    total = values.get("MemTotal", 0)
    # MemAvailable is what new containers can actually get; MemFree misses reclaimable cache.
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return total // 1024, available // 1024


def read_capacity(meminfo: Path = Path("/proc/meminfo")) -> Capacity:
    """This machine's capacity now."""
    total, available = parse_meminfo(meminfo.read_text())
    return Capacity(
        cpu_count=os.cpu_count() or 1,
        mem_total_mb=total,
        mem_free_mb=available,
        load_avg=os.getloadavg()[0],
    )
