"""How the worker's garbage collector runs: over young objects, so a collection never stalls the event loop.

The worker holds its metric state (cells, lead and deal states, the dedup index) as hundreds of thousands of
long-lived dicts, and allocates many short-lived ones per event. CPython's cyclic collector rescans every
tracked object in a full (oldest-generation) collection: with the state in memory that took 250 ms and
more (docs/performance.md), a pause that every event in flight waits through. So:

* collections of the young generations run rarer (first threshold 50,000 instead of 700);
* every ``freeze_every_s`` the young generations are collected and what survives is frozen
  (``gc.freeze``): the collector never rescans it, and a full collection only sees what was allocated
  since, a few milliseconds' work;
* every ``full_every_s`` everything is unfrozen, collected and frozen again: the one long pause, rare,
  that frees reference cycles which became garbage after they were frozen.

Reference counting frees everything else as usual; only garbage *cycles* wait for the full collection.
"""

from __future__ import annotations

import gc
import logging
import time

from mode import Service

log = logging.getLogger(__name__)

#: Allocations between two collections of the youngest generation, and collections between older ones.
THRESHOLDS = (50_000, 20, 100)


def collect_young_and_freeze() -> None:
    """Collect the two young generations, then freeze every object still tracked."""
    gc.collect(1)
    gc.freeze()


def collect_all_and_freeze() -> float:
    """Unfreeze, run a full collection and freeze again; returns the pause in seconds."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


class GarbageCollection(Service):
    """Sets the thresholds at start, then freezes the survivors every ``freeze_every_s`` (see the module)."""

    def __init__(self, freeze_every_s: float = 30.0, full_every_s: float = 3600.0) -> None:
        super().__init__()
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s

    async def on_start(self) -> None:
        gc.set_threshold(*THRESHOLDS)

    async def on_stop(self) -> None:
        gc.unfreeze()

    @Service.task
    async def _pace(self) -> None:
        last_full = time.monotonic()
        while not self.should_stop:
            await self.sleep(self.freeze_every_s)
            if self.should_stop:
                break
            if time.monotonic() - last_full >= self.full_every_s:
                last_full = time.monotonic()
                log.info("full garbage collection took %.0f ms", 1000 * collect_all_and_freeze())
            else:
                collect_young_and_freeze()
