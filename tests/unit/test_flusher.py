"""``Flusher.flush``: each family's live windows go to Redis as soon as it is rendered, the long windows after
them, the metric topics get everything; a failed sink keeps its partials (the newest per key) for later."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from salespulse.engine.flusher import Flusher
from salespulse.outputs.aggregates import Partial
from salespulse.outputs.prometheus import WorkerHealth


def partial(family: str, key: str, window: str, value: int, partition: int = 0) -> Partial:
    return Partial(family, f"salespulse:{family}:rep:{key}:{window}", partition, value, {"total": value}, 0,
                   f"rep:{key}:{window}:p{partition}", {"window": window})


class StubFamily:
    """Renders the partials it is given, once, and notes when it rendered in the shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.dirty: set[object] = set()
        self.pending: list[Partial] = []

    def render(self, owned: set[int], now: float | None = None, slow_budget: int | None = None) -> list[Partial]:
        self.log.append(f"render {self.name}")
        rendered, self.pending = self.pending, []
        return rendered

    def mark_rolling_dirty(self, partitions: object) -> None:
        pass


class RecordingSink:
    """A publisher whose ``publish`` records what it got (or fails while ``failing``)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.failing = False
        self.sent: list[list[Partial]] = []

    async def publish(self, partials: Sequence[Partial]) -> int:
        self.log.append(f"{self.name} {sorted(p.redis_key.split(':')[1] + ':' + p.record['window'] for p in partials)}")
        if self.failing:
            raise ConnectionError("sink down")
        self.sent.append(list(partials))
        return len(partials)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def flusher(families: list[StubFamily], redis: RecordingSink, kafka: RecordingSink) -> Flusher:
    return Flusher(families, lambda: {0}, redis, kafka, WorkerHealth(CollectorRegistry()),  # type: ignore[arg-type]
                   interval_s=0.25, max_pending=1000)


async def test_each_familys_live_windows_reach_redis_before_the_next_family_renders_and_long_windows_last() -> None:
    log: list[str] = []
    activity, engagement = StubFamily("activity", log), StubFamily("engagement", log)
    activity.pending = [partial("activity", "ann", "all", 1), partial("activity", "ann", "week:2026-W47", 1),
                        partial("activity", "ann", "day:2026-11-22", 1)]
    engagement.pending = [partial("engagement", "ann", "rolling:7d", 2), partial("engagement", "ann", "all", 2)]
    redis, kafka = RecordingSink("redis", log), RecordingSink("kafka", log)

    assert await flusher([activity, engagement], redis, kafka).flush() == 5

    assert log == [
        "render activity",
        "redis ['activity:all', 'activity:day:2026-11-22']",
        "render engagement",
        "redis ['engagement:all']",
        "redis ['activity:week:2026-W47', 'engagement:rolling:7d']",
        "kafka ['activity:all', 'activity:day:2026-11-22', 'activity:week:2026-W47', 'engagement:all', "
        "'engagement:rolling:7d']",
    ]


async def test_partials_a_failed_redis_flush_kept_go_out_with_the_next_flush_newest_value_first() -> None:
    log: list[str] = []
    activity = StubFamily("activity", log)
    redis, kafka = RecordingSink("redis", log), RecordingSink("kafka", log)
    flush = flusher([activity], redis, kafka)

    redis.failing = True
    activity.pending = [partial("activity", "ann", "all", 1), partial("activity", "bob", "all", 5)]
    await flush.flush()
    assert redis.sent == []

    redis.failing = False
    activity.pending = [partial("activity", "ann", "all", 2)]  # ann changed again meanwhile
    await flush.flush()
    sent = {p.redis_key: p.fields["total"] for batch in redis.sent for p in batch}
    assert sent == {"salespulse:activity:rep:ann:all": 2, "salespulse:activity:rep:bob:all": 5}
    assert sum(len(batch) for batch in redis.sent) == 2  # nothing sent twice

    await flush.flush()  # nothing new: nothing sent
    assert sum(len(batch) for batch in redis.sent) == 2
