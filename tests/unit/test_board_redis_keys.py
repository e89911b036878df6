"""The Redis keys the live board reads beyond the totals: leads waiting now (``AwaitingPublisher``) and the
newest alerts (``salespulse:alerts:recent``, written with each alert's once-only publication). Real Redis."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from salespulse.board.snapshot import BoardReader, BoardView
from salespulse.config import load_config
from salespulse.outputs.alerts import ALERT_COUNTS_PREFIX, RECENT_ALERTS_KEY, AlertSinks
from salespulse.engine.awaiting import AwaitingPublisher
from salespulse.outputs.awaiting import AwaitingSink, AwaitingSnapshot
from salespulse.outputs.aggregates import awaiting_key
from salespulse.outputs.prometheus import WorkerHealth
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog

SLA = 300


def event(kind: str, lead: str, at: float, **extra: str) -> bytes:
    return orjson.dumps({"event_id": f"{kind}-{lead}", "type": kind, "lead_id": lead, "rep_id": "rep-1",
                         "team": "emea", "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat(), **extra})


def worker() -> tuple[BatchProcessor, LeadResponseFamily]:
    table: dict[str, bytes] = {}
    family = LeadResponseFamily(CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), ZoneInfo("UTC"), 35 * 86400, SLA)
    return BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None), family


async def test_waiting_leads_are_written_as_absolute_values_and_heal_after_redis_lost_them(
    redis_client: aioredis.Redis,
) -> None:
    now = time.time()
    processor, family = worker()
    processor.process([(0, 0, event("lead.created", "L1", now - 60)), (0, 1, event("lead.created", "L2", now - 10)),
                       (1, 0, event("lead.created", "L3", now - 30))], now=now)
    publisher = AwaitingPublisher(family, lambda: {0, 1}, AwaitingSink(redis_client, 120), WorkerHealth(CollectorRegistry()))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("salespulse:updates")
    assert await publisher.publish() == 2
    first = orjson.loads(await redis_client.get(awaiting_key(0)))
    assert first["count"] == 2 and [lead["lead_id"] for lead in first["leads"]] == ["L1", "L2"]  # oldest first
    assert first["leads"][0]["rep_id"] == "rep-1" and first["leads"][0]["deadline"] == first["leads"][0]["created_at"] + SLA
    assert 0 < await redis_client.ttl(awaiting_key(0)) <= 4 * publisher.refresh_s
    message = None
    while message is None or message["type"] != "message":
        message = await pubsub.get_message(timeout=2.0)
    assert orjson.loads(message["data"])["updates"][0] == {"key": awaiting_key(0), "values": {"count": 2}}
    await pubsub.aclose()

    assert await publisher.publish() == 0  # nothing changed, not yet time for the full rewrite
    processor.process([(0, 2, event("call.logged", "L1", now, outcome="connected"))], now=now)
    assert await publisher.publish() == 1  # only the partition that changed
    again = orjson.loads(await redis_client.get(awaiting_key(0)))
    assert again["count"] == 1 and [lead["lead_id"] for lead in again["leads"]] == ["L2"]
    assert await publisher.publish(full=True) == 2
    assert orjson.loads(await redis_client.get(awaiting_key(0))) == again  # idempotent

    await redis_client.flushall()  # Redis lost its data: the periodic full rewrite puts it back
    publisher.refresh_s = 0.0
    assert await publisher.publish() == 2
    assert orjson.loads(await redis_client.get(awaiting_key(1)))["leads"][0]["lead_id"] == "L3"


async def test_recent_alerts_keep_each_alert_once_newest_first(redis_client: aioredis.Redis) -> None:
    sinks = AlertSinks(redis_client, "127.0.0.1:1")  # the Kafka half is not used by this test

    async def send_redis_half(alerts: list[dict]) -> None:
        await sinks.publish_redis([(0, a["lead_id"], a) for a in alerts], keep=2)

    def alert(lead: str, status: str, second: int) -> dict:
        return {"alert": "lead_response_sla", "status": status, "lead_id": lead,
                "emitted_at": f"2026-11-22T09:05:{second:02d}+00:00"}

    await send_redis_half([alert("L1", "firing", 1), alert("L2", "firing", 2)])
    await send_redis_half([alert("L1", "firing", 1)])  # a takeover republishes: nothing twice
    await send_redis_half([alert("L1", "resolved", 3)])
    recent = [orjson.loads(v) for v in await redis_client.zrevrange(RECENT_ALERTS_KEY, 0, -1)]
    assert [(a["lead_id"], a["status"]) for a in recent] == [("L1", "resolved"), ("L2", "firing")]  # kept: 2


async def test_alert_counts_per_rule_team_and_day_count_each_status_once(redis_client: aioredis.Redis) -> None:
    sinks = AlertSinks(redis_client, "127.0.0.1:1", ZoneInfo("America/New_York"))  # the Kafka half is not used

    def alert(rule: str, entity: str, status: str, team: str, emitted: str) -> tuple[int, str, dict]:
        return 0, entity, {"alert": rule, "status": status, "lead_id": entity, "team": team, "emitted_at": emitted}

    late_evening = "2026-11-23T03:30:00+00:00"  # 22:30 on the 22nd in New York: counted on the 22nd
    batch = [alert("lead_response_sla", "L1", "firing", "team:a", "2026-11-22T15:00:00+00:00"),
             alert("lead_response_sla", "L2", "firing", "team:a", late_evening),
             alert("deal_stalled", "D1@x", "firing", "team:a", "2026-11-22T16:00:00+00:00")]
    await sinks.publish_redis(batch)
    await sinks.publish_redis(batch)  # a takeover republishes: counted once
    await sinks.publish_redis([alert("lead_response_sla", "L1", "resolved", "team:a", "2026-11-22T17:00:00+00:00")])
    counts = await redis_client.hgetall(f"{ALERT_COUNTS_PREFIX}2026-11-22")
    assert {k.decode(): int(v) for k, v in counts.items()} == {
        "lead_response_sla:firing:team:a": 2, "lead_response_sla:resolved:team:a": 1, "deal_stalled:firing:team:a": 1}
    assert 0 < await redis_client.ttl(f"{ALERT_COUNTS_PREFIX}2026-11-22") <= 8 * 86400
    view = BoardView.from_config(load_config(None), ZoneInfo("America/New_York"), 300)
    rows = await BoardReader(redis_client, view)._alert_counts("2026-11-22")
    assert rows == [{"alert": "deal_stalled", "team": "team:a", "firing": 1, "resolved": 0},
                    {"alert": "lead_response_sla", "team": "team:a", "firing": 2, "resolved": 1}]


async def test_the_awaiting_sink_keeps_what_a_failed_flush_could_not_write_and_the_newest_snapshot_wins(
    redis_client: aioredis.Redis,
) -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    sink = AwaitingSink(down, 120)
    sink.add([AwaitingSnapshot(0, 1, [{"lead_id": "L1"}]), AwaitingSnapshot(1, 0)])
    with pytest.raises(Exception):
        await sink.flush()
    await down.aclose()
    sink.redis = redis_client  # Redis is back
    sink.add([AwaitingSnapshot(0, 2, [{"lead_id": "L1"}, {"lead_id": "L2"}])])
    assert await sink.flush() == 2
    assert orjson.loads(await redis_client.get(awaiting_key(0)))["count"] == 2
    assert orjson.loads(await redis_client.get(awaiting_key(1)))["count"] == 0
    assert await sink.flush() == 0


async def test_alert_sinks_keep_what_a_failed_flush_could_not_publish_once_per_clock_and_status(
    redis_client: aioredis.Redis,
) -> None:
    sinks = AlertSinks(redis_client, "127.0.0.1:1")
    delivered: list[list[tuple[int, str, dict]]] = []
    failing = [True]

    async def send(alerts: list[tuple[int, str, dict]]) -> None:
        if failing[0]:
            raise ConnectionError("Kafka is down")
        delivered.append(list(alerts))

    sinks.send = send  # type: ignore[method-assign, assignment]  # the Kafka and Redis halves are tested elsewhere
    firing = {"alert": "lead_response_sla", "status": "firing", "lead_id": "L1"}
    sinks.add([(0, "L1", firing)])
    with pytest.raises(ConnectionError):
        await sinks.flush()
    failing[0] = False
    sinks.add([(0, "L1", firing), (0, "L2", {**firing, "lead_id": "L2"})])  # the clock offers L1 again
    assert await sinks.flush() == 2
    assert [(cid, alert["status"]) for _, cid, alert in delivered[0]] == [("L1", "firing"), ("L2", "firing")]
    assert await sinks.flush() == 0
