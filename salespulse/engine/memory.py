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

A partition's load (a restart, a failover) makes the same long-lived objects by the hundred thousand, before
the first freeze: there ``loading_state`` turns automatic collections off and freezes what the load made, so
no collection rescans them while they are made (each full one held the GIL for 0.15 s over 640,000 dicts).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mode import Service

log = logging.getLogger(__name__)

#: Allocations between two collections of the youngest generation, and collections between older ones.
THRESHOLDS = (50_000, 20, 100)


def collect_young_and_freeze() -> None:
    """Collect the two young generations, then freeze every object still tracked."""
    gc.collect(1)
    gc.freeze()


_loads = 0  # loads under way (a worker loads several partitions at once); the first turns collections off
_enabled_before = True


@contextmanager
def loading_state() -> Iterator[None]:
    """Around the load of state that lives on: no automatic collection meanwhile, and what exists when the last
    load ends is frozen (it is alive; garbage cycles made meanwhile wait for the next full collection)."""
    global _loads, _enabled_before
    if _loads == 0:
        _enabled_before = gc.isenabled()
        gc.disable()
    _loads += 1
    try:
        yield
    finally:
        _loads -= 1
        if _loads == 0:
            gc.freeze()
            if _enabled_before:
                gc.enable()


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
