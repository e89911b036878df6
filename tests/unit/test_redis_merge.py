"""``RedisPublisher`` + ``merge_partials.lua`` on a real redis-server: per-partition partials summed into totals."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis

from salespulse.families.activity.rules import with_rollups
from salespulse.families.fields import add_fields
from salespulse.families.lead_response.rules import BUCKET_FIELDS
from salespulse.families.lead_response.spec import redis_derived_spec
from salespulse.models.events import EventAdapter
from salespulse.outputs.aggregates import Partial
from salespulse.outputs.redis import UPDATES_CHANNEL, RedisPublisher
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore

KEY = "salespulse:activity:rep:anna:all"


def partial(
    partition: int,
    watermark: int,
    fields: dict[str, int | float],
    key: str = KEY,
    ttl_s: int = 0,
    family: str = "activity",
) -> Partial:
    return Partial(
        family=family,
        redis_key=key,
        partition=partition,
        watermark=watermark,
        fields=fields,
        ttl_s=ttl_s,
        topic_key=f"{key}:p{partition}",
        record={},
    )


async def totals(client: aioredis.Redis, key: str = KEY) -> dict[str, float]:
    raw = await client.hgetall(key)
    return {k.decode(): float(v) for k, v in raw.items()}


async def stored_partial(client: aioredis.Redis, partition: int, key: str = KEY) -> tuple[int, dict[str, float]] | None:
    """The watermark and fields ``key#partials`` holds for a partition (None: nothing)."""
    raw = await client.hget(f"{key}#partials", str(partition))
    if raw is None:
        return None
    watermark, fields = raw.split(b" ", 1)
    return int(watermark), orjson.loads(fields)


async def test_partials_of_two_partitions_sum_into_the_total_hash(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    changed = await publisher.publish(
        [
            partial(0, 5, {"call:connected": 1, "call": 1, "total": 1}),
            partial(1, 9, {"call:connected": 2, "email_sent": 3, "call": 2, "total": 5}),
        ]
    )
    assert changed == 1  # one total hash, rewritten once for both partitions
    assert await totals(redis_client) == {"call:connected": 3, "call": 3, "email_sent": 3, "total": 6}
    assert await stored_partial(redis_client, 0) == (5, {"call:connected": 1, "call": 1, "total": 1})
    assert await stored_partial(redis_client, 1) == (9, {"call:connected": 2, "email_sent": 3, "call": 2, "total": 5})
    assert await redis_client.hlen(f"{KEY}#partials") == 2


async def test_partials_published_in_separate_calls_also_sum(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    await publisher.publish([partial(3, 1, {"total": 4})])
    await publisher.publish([partial(7, 1, {"total": 6})])
    assert await totals(redis_client) == {"total": 10}


async def test_a_newer_partial_replaces_its_partitions_contribution_absolutely(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    await publisher.publish([partial(0, 1, {"total": 2}), partial(1, 1, {"total": 5})])
    await publisher.publish([partial(0, 4, {"total": 3})])  # absolute value 3, not an increment of 3
    assert await totals(redis_client) == {"total": 8}


async def test_republishing_the_same_partial_is_idempotent(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    batch = [partial(0, 5, {"call": 2, "total": 2}), partial(1, 6, {"call": 1, "total": 1})]
    await publisher.publish(batch)
    first = await totals(redis_client)
    for _ in range(3):
        assert await publisher.publish(batch) == 1  # equal watermark: accepted, and the result is the same
    assert await totals(redis_client) == first == {"call": 3, "total": 3}


async def test_partial_with_a_lower_watermark_than_stored_is_ignored(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    await publisher.publish([partial(0, 10, {"call": 5, "total": 5}), partial(1, 3, {"call": 1, "total": 1})])
    # a worker that lost partition 0 still flushes its older view
    assert await publisher.publish([partial(0, 7, {"call": 1, "visit": 9, "total": 10})]) == 0
    assert await totals(redis_client) == {"call": 6, "total": 6}
    assert await stored_partial(redis_client, 0) == (10, {"call": 5, "total": 5})


async def test_stale_partial_in_a_mixed_batch_leaves_the_others_applied(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    other = "salespulse:activity:rep:ben:all"
    await publisher.publish([partial(0, 10, {"total": 5})])
    changed = await publisher.publish([partial(0, 2, {"total": 1}), partial(0, 11, {"total": 7}, key=other)])
    assert changed == 1
    assert await totals(redis_client) == {"total": 5}
    assert await totals(redis_client, other) == {"total": 7}


async def test_first_partial_with_watermark_minus_one_is_accepted(redis_client: aioredis.Redis) -> None:
    assert await RedisPublisher(redis_client).publish([partial(0, -1, {"total": 0})]) == 1
    assert await totals(redis_client) == {"total": 0}


async def test_field_missing_from_a_new_partial_contributes_zero_for_that_partition(
    redis_client: aioredis.Redis,
) -> None:
    publisher = RedisPublisher(redis_client)
    await publisher.publish(
        [partial(0, 1, {"call": 2, "visit": 1, "total": 3}), partial(1, 1, {"visit": 4, "total": 4})]
    )
    assert await totals(redis_client) == {"call": 2, "visit": 5, "total": 7}
    await publisher.publish([partial(0, 2, {"call": 3, "total": 3})])  # partition 0 has no visit any more
    assert await totals(redis_client) == {"call": 3, "visit": 4, "total": 7}
    assert await stored_partial(redis_client, 0) == (2, {"call": 3, "total": 3})
    await publisher.publish([partial(1, 2, {"total": 0})])  # and now neither partition has one
    assert (await totals(redis_client)).get("visit", 0) == 0
    assert (await totals(redis_client)).get("call") == 3


async def test_ttl_is_applied_to_total_partial_and_parts_when_positive(redis_client: aioredis.Redis) -> None:
    key = "salespulse:activity:rep:anna:day:2026-11-22"
    await RedisPublisher(redis_client).publish([partial(0, 1, {"total": 1}, key=key, ttl_s=120)])
    for name in (key, f"{key}#partials"):
        ttl = await redis_client.ttl(name)
        assert 0 < ttl <= 120, name


async def test_no_ttl_when_ttl_is_zero(redis_client: aioredis.Redis) -> None:
    await RedisPublisher(redis_client).publish([partial(0, 1, {"total": 1}, ttl_s=0)])
    for name in (KEY, f"{KEY}#partials"):
        assert await redis_client.ttl(name) == -1, name


async def test_ttl_is_refreshed_by_each_publication(redis_client: aioredis.Redis) -> None:
    key = "salespulse:activity:rep:anna:week:2026-W47"
    publisher = RedisPublisher(redis_client)
    await publisher.publish([partial(0, 1, {"total": 1}, key=key, ttl_s=60)])
    await publisher.publish([partial(1, 1, {"total": 1}, key=key, ttl_s=3600)])
    assert 60 < await redis_client.ttl(key) <= 3600
    assert 60 < await redis_client.ttl(f"{key}#partials") <= 3600


async def _next_message(pubsub: Any, timeout: float = 5.0) -> dict[str, Any] | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return message
    return None


async def test_subscriber_receives_the_changed_keys_and_their_totals(redis_client: aioredis.Redis) -> None:
    other = "salespulse:activity:team:north:all"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(UPDATES_CHANNEL)
    try:
        publisher = RedisPublisher(redis_client)
        await publisher.publish([partial(1, 4, {"call": 2, "total": 2})])
        first = await _next_message(pubsub)
        assert first is not None and first["channel"] == UPDATES_CHANNEL.encode()
        assert orjson.loads(first["data"]) == {"family": "activity", "updates": [{"key": KEY, "values": {"call": 2, "total": 2}}]}

        await publisher.publish([partial(0, 7, {"call": 1, "total": 1}), partial(0, 7, {"visit": 3, "total": 3}, key=other)])
        second = orjson.loads((await _next_message(pubsub))["data"])
        assert second["family"] == "activity"
        assert {u["key"]: u["values"] for u in second["updates"]} == {
            KEY: {"call": 3, "total": 3},
            other: {"visit": 3, "total": 3},
        }

        # a stale partial changes nothing and announces nothing
        await publisher.publish([partial(0, 1, {"call": 100, "total": 100})])
        assert await _next_message(pubsub, timeout=0.5) is None
    finally:
        await pubsub.unsubscribe(UPDATES_CHANNEL)
        await pubsub.aclose()


async def test_publisher_with_an_empty_channel_name_publishes_nothing(redis_client: aioredis.Redis) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(UPDATES_CHANNEL)
    try:
        assert await RedisPublisher(redis_client, channel="").publish([partial(0, 1, {"total": 1})]) == 1
        assert await _next_message(pubsub, timeout=0.5) is None
        assert await totals(redis_client) == {"total": 1}
    finally:
        await pubsub.unsubscribe(UPDATES_CHANNEL)
        await pubsub.aclose()


async def test_publishing_nothing_touches_nothing(redis_client: aioredis.Redis) -> None:
    assert await RedisPublisher(redis_client).publish([]) == 0
    assert await redis_client.dbsize() == 0


async def test_more_partials_than_one_script_call_takes_are_all_merged(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    batch = [partial(p, 1, {"total": i}, key=f"salespulse:activity:rep:r{i}:all") for i in range(600) for p in (0, 1)]
    assert await publisher.publish(batch) == 600  # keys changed
    assert await totals(redis_client, "salespulse:activity:rep:r599:all") == {"total": 1198}
    assert await totals(redis_client, "salespulse:activity:rep:r0:all") == {"total": 0}


async def test_fractional_values_sum(redis_client: aioredis.Redis) -> None:
    await RedisPublisher(redis_client).publish(
        [partial(0, 1, {"amount": 1250.5}, key="k"), partial(1, 1, {"amount": 0.25}, key="k")]
    )
    assert await totals(redis_client, "k") == {"amount": 1250.75}


async def test_rendered_activity_partials_of_two_partitions_merge_to_the_batch_totals(
    redis_client: aioredis.Redis,
) -> None:
    now = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
    family = ActivityFamily(CellStore({}, "activity"), ZoneInfo("UTC"), retention_s=35 * 86400)
    per_partition: dict[int, dict[str, int]] = {0: {}, 1: {}}
    calls = [("connected", 0), ("no_answer", 1), ("no_answer", 0), ("busy", 1), ("connected", 1)]
    for p in per_partition:
        family.cells.load_partition(p)
    for offset, (outcome, p) in enumerate(calls):
        event = EventAdapter.validate_python(
            {
                "event_id": f"e{offset}",
                "type": "call.logged",
                "occurred_at": "2026-11-22T14:00:00Z",
                "lead_id": "L1",
                "rep_id": "anna",
                "outcome": outcome,
            }
        )
        family.apply(p, offset, event, now)
        add_fields(per_partition[p], {f"call:{outcome}": 1})
    for p in (0, 1):
        family.cells.write_touched(p, 10 + p)
        family.partition_wm[p] = 10 + p
    await RedisPublisher(redis_client).publish(family.render({0, 1}, now))
    expected = with_rollups(add_fields(dict(per_partition[0]), per_partition[1]))
    for window in ("all", "day:2026-11-22", "week:2026-W47", "month:2026-11", "rolling:24h", "rolling:7d"):
        assert await totals(redis_client, f"salespulse:activity:rep:anna:{window}") == expected, window
        assert await totals(redis_client, f"salespulse:activity:team:unassigned:{window}") == expected, window
    assert expected == {"call:connected": 2, "call:no_answer": 2, "call:busy": 1, "call": 5, "total": 5}
    assert await redis_client.ttl("salespulse:activity:rep:anna:day:2026-11-22") > 0
    assert await redis_client.ttl("salespulse:activity:rep:anna:all") == -1


async def test_a_total_equals_a_rebuild_from_the_stored_partials(redis_client: aioredis.Redis) -> None:
    rng = random.Random(7)
    publisher = RedisPublisher(redis_client, derived={"lead_response": redis_derived_spec()})
    fields = ["created", "touched", "within_sla", "response_sum_s", *BUCKET_FIELDS[:4]]
    keys = [f"salespulse:lead_response:rep:r{i}:all" for i in range(3)]
    watermarks = {(key, p): 0 for key in keys for p in range(3)}
    for _ in range(60):
        batch = []
        for key, p in rng.sample(sorted(watermarks), 4):
            watermarks[key, p] += rng.choice([1, 1, 1, -5])  # now and then a stale writer
            values = {f: rng.choice([0, 1, 2, 7, 2.5, 1e-3]) for f in rng.sample(fields, rng.randint(0, len(fields)))}
            batch.append(partial(p, watermarks[key, p], values, key=key, family="lead_response"))
        await publisher.publish(batch)
    for key in keys:
        merged = await totals(redis_client, key)
        # Without its total, the next publication rebuilds it as the sum of every stored partial.
        found = await stored_partial(redis_client, 0, key)
        assert found is not None
        wm, stored = found
        await redis_client.delete(key)
        await publisher.publish([partial(0, wm, stored, key=key, family="lead_response")])
        rebuilt = await totals(redis_client, key)
        assert merged.keys() == rebuilt.keys()
        assert all(abs(merged[f] - rebuilt[f]) < 1e-9 for f in rebuilt), (key, merged, rebuilt)


async def test_a_redis_that_forgot_the_script_gets_it_again_and_the_flush_goes_through(redis_client: aioredis.Redis) -> None:
    publisher = RedisPublisher(redis_client)
    await publisher.publish([partial(0, 1, {"total": 1})])
    await redis_client.script_flush()  # as after a Redis restart
    assert await publisher.publish([partial(1, 1, {"total": 2})]) == 1
    assert await totals(redis_client) == {"total": 3}
