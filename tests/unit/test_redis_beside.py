"""``merge_partials.lua`` on a real redis-server: target fields merged by max with derived attainment, and a
family's per-rep rates published beside their team's (``team_<rate>``), whatever the order of the writes."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from salespulse.families.engagement.spec import RATIOS, derived_fields, redis_derived_spec
from salespulse.models.events import EventAdapter
from salespulse.outputs.aggregates import Partial
from salespulse.outputs.redis import RedisPublisher
from salespulse.engine.cells import CellStore
from salespulse.families.engagement.family import EngagementFamily
from salespulse.families.engagement.state import OUTREACH_CODEC
from salespulse.engine.record_log import RecordLog

REP = "salespulse:engagement:rep:anna:day:2026-11-22"
TEAM = "salespulse:engagement:team:north:day:2026-11-22"
SPEC = {"ratios": [["open_rate", "emails_opened", "emails_sent"]]}


def partial(key: str, partition: int, wm: int, fields: dict[str, float], group: str | None = None) -> Partial:
    return Partial("engagement", key, partition, wm, fields, 0, f"{key}:p{partition}", {}, group)


def publisher(client: aioredis.Redis) -> RedisPublisher:
    return RedisPublisher(client, derived={"engagement": SPEC}, beside={"engagement": ["open_rate"]})


async def totals(client: aioredis.Redis, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in (await client.hgetall(key)).items()}


async def test_targets_merge_by_max_and_attainment_is_derived_from_the_merged_count(redis_client: aioredis.Redis) -> None:
    key = "salespulse:activity:rep:anna:day:2026-11-22"
    await RedisPublisher(redis_client).publish(
        [
            Partial("activity", key, 0, 3, {"call": 6, "target:call": 40, "target:visit": 4}, 0, "k0", {}),
            Partial("activity", key, 1, 5, {"call": 4, "target:call": 40, "target:visit": 4}, 0, "k1", {}),
        ]
    )
    assert await totals(redis_client, key) == {
        "call": 10, "target:call": 40, "target:visit": 4, "attainment:call": 0.25, "attainment:visit": 0.0
    }
    # a new target in config reaches Redis with the next partial of either partition
    await RedisPublisher(redis_client).publish(
        [Partial("activity", key, 1, 6, {"call": 5, "target:call": 50, "target:visit": 4}, 0, "k1", {})]
    )
    assert (await totals(redis_client, key))["attainment:call"] == 11 / 50


async def test_rep_total_gets_the_team_rate_beside_it_when_both_are_in_one_flush(redis_client: aioredis.Redis) -> None:
    await publisher(redis_client).publish(
        [
            partial(REP, 0, 1, {"emails_sent": 4, "emails_opened": 1}, group=TEAM),  # listed first on purpose
            partial(TEAM, 0, 1, {"emails_sent": 10, "emails_opened": 5}),
            partial(TEAM, 1, 1, {"emails_sent": 10, "emails_opened": 3}),
        ]
    )
    assert await totals(redis_client, REP) == {"emails_sent": 4, "emails_opened": 1, "open_rate": 0.25, "team_open_rate": 0.4}
    assert "team_open_rate" not in await totals(redis_client, TEAM)


async def test_a_later_team_rewrite_refreshes_the_reps_copy_and_a_rep_rewrite_reads_the_team(
    redis_client: aioredis.Redis,
) -> None:
    pub = publisher(redis_client)
    await pub.publish([partial(REP, 0, 1, {"emails_sent": 2, "emails_opened": 1}, group=TEAM)])
    assert "team_open_rate" not in await totals(redis_client, REP)  # the team has no total yet
    await pub.publish([partial(TEAM, 0, 2, {"emails_sent": 8, "emails_opened": 2})])
    assert (await totals(redis_client, REP))["team_open_rate"] == 0.25
    await pub.publish([partial(REP, 0, 3, {"emails_sent": 3, "emails_opened": 3}, group=TEAM)])
    assert await totals(redis_client, REP) == {"emails_sent": 3, "emails_opened": 3, "open_rate": 1.0, "team_open_rate": 0.25}


async def test_a_rep_that_moved_team_is_no_longer_refreshed_by_the_old_one(redis_client: aioredis.Redis) -> None:
    other = TEAM.replace("north", "south")
    pub = publisher(redis_client)
    await pub.publish([partial(TEAM, 0, 1, {"emails_sent": 2, "emails_opened": 2}),
                       partial(other, 0, 1, {"emails_sent": 4, "emails_opened": 1})])
    await pub.publish([partial(REP, 0, 2, {"emails_sent": 1}, group=TEAM)])
    await pub.publish([partial(REP, 0, 3, {"emails_sent": 1}, group=other)])
    await pub.publish([partial(TEAM, 0, 4, {"emails_sent": 2, "emails_opened": 1})])  # the old team changes
    assert (await totals(redis_client, REP))["team_open_rate"] == 0.25
    assert await redis_client.smembers(f"{TEAM}#members") == set()


async def test_a_team_rate_that_becomes_undefined_is_removed_from_the_rep(redis_client: aioredis.Redis) -> None:
    pub = publisher(redis_client)
    await pub.publish([partial(TEAM, 0, 1, {"emails_sent": 2, "emails_opened": 1}),
                       partial(REP, 0, 1, {"emails_sent": 2}, group=TEAM)])
    assert (await totals(redis_client, REP))["team_open_rate"] == 0.5
    await pub.publish([partial(TEAM, 0, 2, {"emails_sent": 0})])
    assert "team_open_rate" not in await totals(redis_client, REP)


async def test_an_expired_rep_total_is_not_recreated_by_its_team(redis_client: aioredis.Redis) -> None:
    pub = publisher(redis_client)
    await pub.publish([partial(TEAM, 0, 1, {"emails_sent": 2}), partial(REP, 0, 1, {"emails_sent": 2}, group=TEAM)])
    await redis_client.delete(REP)
    await pub.publish([partial(TEAM, 0, 2, {"emails_sent": 3, "emails_opened": 3})])
    assert await redis_client.exists(REP) == 0


async def test_rendered_engagement_partials_give_rep_and_team_rates_side_by_side(redis_client: aioredis.Redis) -> None:
    now = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
    table: dict[str, bytes] = {}
    family = EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), ZoneInfo("UTC"), 35 * 86400,
                              team_of_rep={"anna": "north", "ben": "north"})
    events = []
    for i, (rep, opened) in enumerate([("anna", True), ("anna", False), ("ben", True), ("ben", True), ("ben", False)]):
        events.append({"type": "email.sent", "rep_id": rep, "email_id": f"m{i}", "lead_id": f"L{i}"})
        if opened:
            events.append({"type": "email.opened", "email_id": f"m{i}", "lead_id": f"L{i}"})
    for p in (0, 1):
        family.cells.load_partition(p)
        family.leads.load_partition(p)
        family.on_loaded(p)
    for offset, fields in enumerate(events):
        event = EventAdapter.validate_python({"event_id": f"e{offset}", "occurred_at": "2026-11-22T14:00:00Z", **fields})
        family.apply(int(fields["lead_id"][1:]) % 2, offset, event, now)
    for p in (0, 1):
        for store in family.stores:
            store.write_touched(p, 100)
        family.partition_wm[p] = 100
    spec = redis_derived_spec()
    pub = RedisPublisher(redis_client, derived={"engagement": spec}, beside={"engagement": family.beside_rates})
    await pub.publish(family.render({0, 1}, now))
    anna = await totals(redis_client, "salespulse:engagement:rep:anna:all")
    assert (anna["open_rate"], anna["team_open_rate"]) == (0.5, 0.6)
    assert anna["team_contact_rate:email"] == 0.0
    north = await totals(redis_client, "salespulse:engagement:team:north:all")
    assert {name: north[name] for name in RATIOS if name in north} == derived_fields(north)
    # every rate the team has is beside the rep's
    assert {f"team_{name}" for name in derived_fields(north)} == {k for k in anna if k.startswith("team_")}
