"""How fast this machine runs Python right now, recorded beside benchmark figures.

The machines of this workplace are virtual: the same kind has run the same code at half the
speed on another day (docs/BENCHMARKS.md). A latency figure alone cannot tell a slower
machine from slower code; a reading of a fixed pure-Python loop beside it can.
"""

from __future__ import annotations

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
