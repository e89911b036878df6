"""What reaches Redis after a worker restarts from a changelog that is behind what it had published (issue 11,
finding 6): the worker published a batch (Redis holds its watermark), was SIGKILLed before that batch's state
reached the changelog, and on restart replays it together with events accepted while it was down."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis

from salespulse.outputs.redis import RedisPublisher
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor, Record

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
KEY = "salespulse:activity:rep:anna:all"


def call(offset: int) -> Record:
    event = {"event_id": f"e{offset}", "type": "call.logged", "occurred_at": "2026-11-22T14:00:00Z",
             "lead_id": f"L{offset}", "rep_id": "anna", "outcome": "connected"}
    return (0, offset, orjson.dumps(event))


def worker(table: dict[str, bytes]) -> tuple[ActivityFamily, BatchProcessor]:
    family = ActivityFamily(CellStore(table, "activity"), ZoneInfo("UTC"), retention_s=35 * 86400)
    return family, BatchProcessor(DedupIndex(table, 72 * 3600), [family], lambda record, why: None)


async def calls_in_redis(client: aioredis.Redis) -> float:
    return float(await client.hget(KEY, "call") or 0)


async def published_then_killed(publisher: RedisPublisher) -> dict[str, bytes]:
    """Six calls counted and published (Redis holds watermark 5); the changelog the broker keeps when the worker
    is killed holds only the first batch (watermark 2): the second batch's writes were still being sent."""
    table: dict[str, bytes] = {}
    family, processor = worker(table)
    processor.process([call(offset) for offset in range(3)], NOW)
    changelog = dict(table)
    processor.process([call(offset) for offset in range(3, 6)], NOW)
    await publisher.publish(family.render({0}, NOW))
    return changelog


async def test_an_event_replayed_after_a_restart_reaches_redis_when_a_flush_falls_between_batch_and_commit(
    redis_client: aioredis.Redis,
) -> None:
    publisher = RedisPublisher(redis_client)
    changelog = await published_then_killed(publisher)
    assert await calls_in_redis(redis_client) == 6

    family, processor = worker(dict(changelog))  # the restarted worker: changelog state at watermark 2
    staged = processor.stage([call(offset) for offset in range(3, 7)], NOW)  # the replay, and one new event
    await publisher.publish(family.render({0}, NOW))  # a flush before the batch's commit (an overlapping commit)
    processor.persist(staged)
    await publisher.publish(family.render({0}, NOW))  # the next flush

    assert await calls_in_redis(redis_client) == 7


async def test_a_partial_rendered_before_a_restart_catches_up_is_not_published_over_a_newer_one(
    redis_client: aioredis.Redis,
) -> None:
    publisher = RedisPublisher(redis_client)
    changelog = await published_then_killed(publisher)

    family, processor = worker(dict(changelog))
    processor.ensure_loaded(0)
    await publisher.publish(family.render({0}, NOW))  # the recovered, older state: Redis keeps the newer value

    assert await calls_in_redis(redis_client) == 6


def test_a_render_while_a_rebalance_hides_a_partition_keeps_its_updates_for_the_next_render() -> None:
    family, processor = worker({})
    processor.process([call(0)], NOW)
    assert family.render(set(), NOW) == []  # owned_partitions() is empty while Faust rebalances
    rendered = {p.redis_key: p.fields for p in family.render({0}, NOW)}
    assert rendered[KEY]["call"] == 1


def test_a_loaded_partition_republishes_all_time_and_today_at_once_and_older_windows_within_the_slow_budget() -> None:
    table: dict[str, bytes] = {}
    _, processor = worker(table)
    days = [NOW - day * 86400 for day in range(10)]
    events = [
        {"event_id": f"e{i}", "type": "call.logged", "lead_id": f"L{i}", "rep_id": "anna", "outcome": "connected",
         "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat()}
        for i, at in enumerate(days)
    ]
    processor.process([(0, i, orjson.dumps(e)) for i, e in enumerate(events)], NOW)

    family, restarted = worker(dict(table))
    restarted.ensure_loaded(0)
    family.dirty.clear()
    family.backlog.clear()
    family.wall_clock = lambda: NOW
    family.mark_partition_dirty(0)
    first = {p.record["window"] for p in family.render({0}, NOW, slow_budget=5) if p.record["scope"] == "rep"}
    assert {"all", "day:2026-11-22"} <= first
    assert len(first - {"all", "day:2026-11-22"}) <= 5  # the budget (rep and team aggregates together)
    assert family.backlog  # the rest waits for the next flushes
    rest: set[str] = set()
    while family.backlog or family.dirty:
        rest |= {p.record["window"] for p in family.render({0}, NOW, slow_budget=5) if p.record["scope"] == "rep"}
    windows = first | rest
    assert {f"day:{datetime.fromtimestamp(at, timezone.utc).date()}" for at in days} <= windows
    assert {"week:2026-W47", "week:2026-W46", "month:2026-11", "rolling:24h", "rolling:7d"} <= windows
