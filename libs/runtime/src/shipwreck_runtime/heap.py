"""Keep what a service builds at start out of the garbage collector's full collections.

A full collection walks every object the collector tracks, and it runs whenever the
objects that survived into the oldest generation have grown by a quarter since the last
one. What a service holds once it has started (modules, classes, functions, its app) lives
until the process ends, yet each full collection walked it again: about 97,000 objects in
the api, 70 ms on the machine of docs/BENCHMARKS.md, a stall for every request, update and
message in flight. Moved to the permanent generation, the walk covers only what came later.
"""

from __future__ import annotations

import gc
import logging


def freeze_startup_heap(logger: logging.Logger | None = None) -> int:
    """Collect what is garbage now, then set everything still alive aside for good.

    Call it once the service is built and before it serves. Returns how many objects were
    set aside, and says so on ``logger`` (debug). Later garbage is collected as before:
    only the objects alive at this call are never examined again (they would not have been
    freed anyway).
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    if logger is not None:
        logger.debug("%d objects built at start set aside from garbage collection", frozen)
    return frozen
