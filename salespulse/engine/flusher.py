"""The publishing loop: every flush interval (or sooner when many updates wait), render and publish.

Renders dirty aggregates of the partitions this worker owns into absolute partials and sends them to
Redis and the metric topics. Redis gets each family's live windows (all time, today) as soon as that
family is rendered, while the next one renders, then the long windows of all; the metric topics get
everything at their own pace. A failed sink keeps its partials (newest per key) for the next flush,
so an outage delays numbers but loses none. A Redis that lost its data (restarted without persistence,
flushed) is noticed within ``redis_check_interval_s`` and gets every aggregate of the owned partitions again,
live windows in the next flush and the others within the slow budget of the flushes after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from mode import Service

from salespulse.families.windows import hour_bucket
from salespulse.outputs.aggregates import Partial, is_live
from salespulse.outputs.sink import BufferedSink, Sink
from salespulse.outputs.prometheus import WorkerHealth
from salespulse.outputs.redis import RedisPublisher
from salespulse.outputs.topics import TopicPublisher
from salespulse.families.windowed import WindowedFamily

log = logging.getLogger(__name__)


class Flusher(Service):
    """Periodically publishes what changed, for the partitions ``owned()`` returns."""

    def __init__(
        self,
        families: Sequence[WindowedFamily],
        owned: Callable[[], set[int]],
        redis: RedisPublisher,
        topics: TopicPublisher,
        health: WorkerHealth,
        interval_s: float,
        max_pending: int,
        slow_budget: int = 250,
        redis_check_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.families = list(families)
        self.owned = owned
        self.topics = topics
        self.health = health
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.slow_budget = slow_budget
        self.redis = redis
        self.redis_check_interval_s = redis_check_interval_s
        self._next_redis_check = 0.0
        #: Called when Redis lost this worker's keys: other writers of Redis rewrite theirs too (leads waiting).
        self.on_redis_lost: list[Callable[[], None]] = []
        # Redis is the live path; the metric topics (for services) take the newest values every 2 s.
        self.redis_sink = BufferedSink("redis", redis.publish)
        self.kafka_sink = BufferedSink("kafka", topics.publish, min_interval_s=2.0)
        self._wake = asyncio.Event()
        self._hour = hour_bucket(time.time())
        self._lock = asyncio.Lock()

    async def on_start(self) -> None:
        await self.topics.start()

    async def on_stop(self) -> None:
        await self.flush(force=True)
        await self.topics.stop()

    def notify(self) -> None:
        """Called after each batch: flush early if many updates are waiting."""
        if sum(len(f.dirty) for f in self.families) >= self.max_pending:
            self._wake.set()

    @Service.task
    async def _flush_periodically(self) -> None:
        last_cpu = 0.0
        last_start = time.monotonic()
        while not self.should_stop:
            # Flushes start an interval apart (a slow flush is followed at once by the next one): a
            # flush mostly waits on Redis and Kafka, and spacing them by wall time delayed every update.
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, last_start + self.interval_s - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            # Under heavy load a flush costs real CPU: space flushes by that (at most one more interval),
            # so consuming keeps up; values are absolute, so nothing is lost by waiting.
            await asyncio.sleep(min(self.interval_s, max(0.0, 2 * last_cpu - self.interval_s)))
            self._wake.clear()
            last_start = time.monotonic()
            cpu_started = time.thread_time()  # includes batches processed while the flush awaited: conservative
            try:
                await self.check_redis()
                await self.flush()
            except Exception:  # the loop must outlive any single failure
                log.exception("flush failed")
            last_cpu = time.thread_time() - cpu_started

    async def _deliver(self, sink: Sink[Partial], force: bool) -> None:
        """Flush one sink; a failure is counted and logged (the sink keeps its partials for the next flush)."""
        try:
            await sink.flush(force)
        except Exception as exc:
            self.health.publish_errors.labels(sink.name).inc()
            log.warning("publishing to %s failed (partials kept for the next flush): %r", sink.name, exc)

    async def check_redis(self) -> bool:
        """At most every ``redis_check_interval_s``: if Redis lost its data, mark every aggregate of the owned
        partitions for publication (the next flushes rewrite them all). True if it did."""
        if time.monotonic() < self._next_redis_check:
            return False
        self._next_redis_check = time.monotonic() + self.redis_check_interval_s
        try:
            lost = await self.redis.lost_everything()
        except Exception as exc:  # Redis down: the sinks count the failure; checked again once it is back
            log.debug("Redis check failed: %r", exc)
            return False
        if not lost:
            return False
        owned = self.owned()
        for family in self.families:
            for partition in owned:
                family.mark_partition_dirty(partition)
        for rewrite in self.on_redis_lost:
            rewrite()
        log.warning("Redis holds none of this worker's keys (restarted empty, or flushed): rewriting %d partitions",
                    len(owned))
        return True

    async def flush(self, force: bool = False) -> int:
        """Render and publish everything dirty now (``force``: every sink, whatever its interval)."""
        async with self._lock:
            started = time.perf_counter()
            now = time.time()
            owned = self.owned()
            hour = hour_bucket(now)
            if hour != self._hour:
                self._hour = hour
                for family in self.families:
                    family.mark_rolling_dirty(owned)
            partials: list[Partial] = []
            later: list[Partial] = []
            sending: list[asyncio.Task[None]] = []
            budget = None if force else max(1, self.slow_budget // len(self.families))
            for family in self.families:
                rendered = family.render(owned, now, slow_budget=budget)
                partials += rendered
                live = [p for p in rendered if is_live(p)]
                later += [p for p in rendered if not is_live(p)]
                # Redis merges this family's live windows while the next family renders.
                self.redis_sink.add(live)
                sending.append(asyncio.create_task(self._deliver(self.redis_sink, force)))
                await asyncio.sleep(0)  # let the task write its commands before rendering goes on
            self.redis_sink.add(later)
            self.kafka_sink.add(partials)
            sending.append(asyncio.create_task(self._deliver(self.redis_sink, force)))
            sending.append(asyncio.create_task(self._deliver(self.kafka_sink, force)))
            await asyncio.gather(*sending)
            if partials:
                self.health.flush_seconds.observe(time.perf_counter() - started)
            return len(partials)
