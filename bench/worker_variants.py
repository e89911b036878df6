"""``salespulse worker`` with experimental monkeypatches, to measure what a change to the worker would buy.

For benchmarking only: nothing here is a fix, and some variants are unsafe (see each description).
``bench_worker.py --variant NAME`` runs its workers through this file; by hand::

    BENCH_VARIANTS=changelog-batching python bench/worker_variants.py worker --loglevel warning
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _changelog_batching() -> None:
    """Drop ``producer_max_batch_size=1`` (keep the short group timeouts).

    UNSAFE on Tansu: FAUST_NOTES.md shows table recovery going backwards without it. Measures what the
    one-record-per-batch workaround costs the changelog writes.
    """
    import salespulse.engine.worker as worker

    original = worker.faust_settings

    def patched(settings: Any) -> dict[str, Any]:
        options = original(settings)
        options.pop("producer_max_batch_size", None)
        return options

    worker.faust_settings = patched


def _no_topic_publisher() -> None:
    """Skip sending partials to ``salespulse.metrics.*`` (measures that sink's share of a flush)."""
    from salespulse.outputs.topics import TopicPublisher

    async def publish(self: TopicPublisher, partials: Any) -> int:
        return len(partials)

    TopicPublisher.publish = publish  # type: ignore[method-assign]


def _no_redis_publisher() -> None:
    """Skip the Redis merge script (measures that sink's share; latency probes then never arrive)."""
    from salespulse.outputs.redis import RedisPublisher

    async def publish(self: RedisPublisher, partials: Any) -> int:
        return len(partials)

    RedisPublisher.publish = publish  # type: ignore[method-assign]


def _trace() -> None:
    """Append one JSON line per agent batch and per flush to ``$BENCH_TRACE_FILE`` (timings, sizes, lag).

    Batch lines: wall time the batch was handed over, seconds the agent waited for it, seconds it took
    to process, records, and the age of its newest / oldest record (now - Kafka CreateTime).
    Flush lines: start, duration, partials rendered. Costs a little; for diagnosis, not for figures.
    """
    import asyncio
    import time

    import orjson

    from salespulse.engine.flusher import Flusher
    from salespulse.engine.processor import Record
    from salespulse.engine.worker import WorkerRuntime

    out = open(os.environ.get("BENCH_TRACE_FILE", "worker-trace.jsonl"), "ab", buffering=0)  # noqa: SIM115

    original_count = WorkerRuntime._count
    last_done = [time.time()]

    async def _count(self: WorkerRuntime, records: list[Record]) -> None:
        got = time.time()
        stamps = [r[3] for r in records if len(r) > 3 and r[3] != float("inf")] or [got]  # type: ignore[misc]
        await original_count(self, records)
        end = time.time()
        out.write(
            orjson.dumps(
                {
                    "k": "batch", "t": got, "wait": got - last_done[0], "proc": end - got, "n": len(records),
                    "age_new": got - max(stamps), "age_old": got - min(stamps),
                }
            )  # fmt: skip
            + b"\n"
        )
        last_done[0] = end

    WorkerRuntime._count = _count  # type: ignore[method-assign]
    original_flush = Flusher.flush

    async def flush(self: Flusher, force: bool = False) -> int:
        started = time.time()
        n = await original_flush(self, force)
        out.write(orjson.dumps({"k": "flush", "t": started, "dur": time.time() - started, "n": n}) + b"\n")
        return n

    Flusher.flush = flush  # type: ignore[method-assign]

    # Anatomy of a flush: render (synchronous), Redis and metric-topic publishing (each awaited).
    from salespulse.outputs.redis import RedisPublisher
    from salespulse.outputs.topics import TopicPublisher
    from salespulse.families.windowed import WindowedFamily

    original_render = WindowedFamily.render

    def render(self: WindowedFamily, owned: set[int], now: float | None = None, **kwargs: Any) -> Any:
        started = time.time()
        partials = original_render(self, owned, now, **kwargs)
        out.write(
            orjson.dumps({"k": "render", "f": self.name, "t": started, "dur": time.time() - started, "n": len(partials)})
            + b"\n"
        )
        return partials

    WindowedFamily.render = render  # type: ignore[method-assign]

    def timed(cls: Any, kind: str) -> None:
        original = cls.publish

        async def publish(self: Any, partials: Any) -> int:
            started = time.time()
            n = await original(self, partials)
            out.write(orjson.dumps({"k": kind, "t": started, "dur": time.time() - started, "n": len(partials)}) + b"\n")
            return n

        cls.publish = publish

    timed(RedisPublisher, "redis")
    timed(TopicPublisher, "topic")

    # The flusher's idle wait between flushes (its module's asyncio.wait_for).
    import salespulse.engine.flusher as flusher_module

    class _AsyncioProxy:
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        @staticmethod
        async def wait_for(aw: Any, timeout: float | None) -> Any:
            started = time.time()
            try:
                return await asyncio.wait_for(aw, timeout)
            finally:
                out.write(orjson.dumps({"k": "idle", "t": started, "dur": time.time() - started}) + b"\n")

    flusher_module.asyncio = _AsyncioProxy()  # type: ignore[assignment]

    # Event-loop stalls: a 10 ms ticker; every tick more than 50 ms late is logged.
    original_on_start = Flusher.on_start

    async def on_start(self: Flusher) -> None:
        await original_on_start(self)

        async def ticker() -> None:
            while True:
                before = time.time()
                await asyncio.sleep(0.01)
                late = time.time() - before - 0.01
                if late > 0.05:
                    out.write(orjson.dumps({"k": "stall", "t": before, "dur": late}) + b"\n")

        self._bench_ticker = asyncio.ensure_future(ticker())

    Flusher.on_start = on_start  # type: ignore[method-assign]


def _no_flush() -> None:
    """Publish nothing at all: no render, no Redis, no metric topic (the dirty sets are just dropped)."""
    from salespulse.engine.flusher import Flusher

    async def flush(self: Flusher) -> int:
        for family in self.families:
            family.dirty = set()
        return 0

    Flusher.flush = flush  # type: ignore[method-assign]


def _no_changelog() -> None:
    """Keep cells and dedup ids in memory only: no table writes, so no changelog traffic (UNSAFE: no recovery)."""
    from salespulse.engine.cells import CellStore
    from salespulse.engine.dedup import DedupIndex

    def write_touched(self: CellStore, partition: int, watermark: int) -> int:
        touched = self._touched[partition]
        cells = self._states[partition]
        for name in touched:
            cells[name]["wm"] = watermark
        count = len(touched)
        touched.clear()
        return count

    def write_pending(self: DedupIndex, partition: int, first_offset: int, now: float | None = None) -> bool:
        had = bool(self._pending[partition])
        self._pending[partition] = {}
        return had

    CellStore.write_touched = write_touched  # type: ignore[method-assign]
    DedupIndex.write_pending = write_pending  # type: ignore[method-assign]


def _fetch_wait(ms: int) -> Callable[[], None]:
    def patch() -> None:
        """Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer; use ``ms`` instead.

        On Tansu a fetch under a steady stream is often held for the whole wait (raw aiokafka at
        2,000 records/s: p50 370 ms with 1500, 31 ms with 100), which puts a floor under latency.
        """
        from faust.transport.drivers import aiokafka as driver

        original = driver.AIOKafkaConsumerThread._create_worker_consumer

        def create(self: Any, transport: Any) -> Any:
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = ms
            return consumer

        driver.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]

    return patch


def _no_pipeline_family() -> None:
    """The pipeline family applies nothing, writes nothing and publishes nothing (what the family costs)."""
    from salespulse.families.pipeline.family import PipelineFamily

    PipelineFamily.apply = lambda self, *args, **kwargs: False  # type: ignore[method-assign]


def _no_follow_ups() -> None:
    """The pipeline family asks for no follow-up events (UNSAFE: lead/deal links are lost; what waiting for their acks costs)."""
    from salespulse.families.pipeline.family import PipelineFamily

    original = PipelineFamily.take_follow_ups

    def dropped(self: Any) -> list[Any]:
        original(self)
        return []

    PipelineFamily.take_follow_ups = dropped  # type: ignore[method-assign]


VARIANTS: dict[str, Callable[[], None]] = {
    "no-pipeline-family": _no_pipeline_family,
    "no-follow-ups": _no_follow_ups,
    "fetch-wait-100": _fetch_wait(100),
    "no-flush": _no_flush,
    "no-changelog": _no_changelog,
    "trace": _trace,
    "changelog-batching": _changelog_batching,
    "no-topic-publisher": _no_topic_publisher,
    "no-redis-publisher": _no_redis_publisher,
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        VARIANTS[name]()


if __name__ == "__main__":
    apply([n for n in os.environ.get("BENCH_VARIANTS", "").split(",") if n])
    from salespulse.cli import main

    main()
