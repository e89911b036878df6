"""The one interface of every output: ``add`` what a render produced, ``flush`` it at the checkpoint.

As Quix Streams' sinks: a sink buffers what it is given and delivers it only when the engine's
checkpoint calls ``flush``; a failed flush keeps everything for the next one. salespulse's checkpoint
for outputs is the flush tick (every ``SALESPULSE_FLUSH_INTERVAL_MS``), not the Kafka offset commit:
every aggregate is an absolute, idempotent per-partition value (``watermark`` orders them), so
delivering one before its offsets are committed can never count it twice, and waiting for the commit
(seconds) would break the latency target.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from salespulse.outputs.aggregates import Partial

Item = TypeVar("Item", contravariant=True)


class Sink(Protocol[Item]):
    """An output (Redis, a metric topic, the board's leads-waiting keys ...) of absolute values ``Item``."""

    name: str

    def add(self, items: Sequence[Item]) -> None:
        """Buffer values for the next flush (a newer value of the same key replaces an older one)."""
        ...

    async def flush(self, force: bool = False) -> int:
        """Deliver everything buffered; on failure keep it for the next flush and raise. Returns how many."""
        ...


class BufferedSink:
    """A ``Sink`` over a ``send`` coroutine: newest partial per (key, partition), optionally rate-limited.

    ``min_interval_s`` coalesces: a sink flushed at most that often sends only the newest value of each
    partial, which is all a compacted metric topic keeps anyway (``force`` ignores it).
    """

    def __init__(self, name: str, send: Callable[[Sequence[Partial]], Awaitable[int]], min_interval_s: float = 0.0) -> None:
        self.name = name
        self.send = send
        self.min_interval_s = min_interval_s
        self.backlog: dict[tuple[str, int], Partial] = {}
        self._last_sent = 0.0

    def add(self, partials: Sequence[Partial]) -> None:
        for partial in partials:
            self.backlog[(partial.redis_key, partial.partition)] = partial

    async def flush(self, force: bool = False) -> int:
        if not self.backlog:
            return 0
        if not force and time.monotonic() - self._last_sent < self.min_interval_s:
            return 0
        self._last_sent = time.monotonic()
        # Take the whole backlog: flushes that overlap (one per family) send disjoint sets.
        pending, self.backlog = self.backlog, {}
        try:
            await self.send(list(pending.values()))
        except BaseException:
            for key, partial in pending.items():
                self.backlog.setdefault(key, partial)  # a newer value added meanwhile wins
            raise
        return len(pending)
