"""The machine readings benchmarks record beside their figures."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.machine import cpu_ms_per, cpu_seconds, cpu_snapshot


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
