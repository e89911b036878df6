"""The ``rep_no_activity`` rule: a watched rep with no outbound activity by the team's local time on a business
day fires once, resolves at the rep's first activity of the day; activities in other partitions reach the
rep's partition as ``rep.active``; no clock on days off; the clock survives a restart."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka.partitioner import DefaultPartitioner

from salespulse.config import load_config
from salespulse.engine.alert_clock import AlertClock
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from salespulse.families.activity.family import ActivityFamily
from salespulse.families.activity.idle import RULE, IdleRule, deadline_on
from salespulse.families.business_hours import BusinessHours
from salespulse.families.entity_clocks import EntityClocks
from salespulse.models.events import event_to_json
from tests.unit.alert_helpers import FakeSinks, alert_clock

PARTITIONS = 4
BERLIN = ZoneInfo("Europe/Berlin")
HOURS = BusinessHours(tz=BERLIN, weekly={d: [(time(9), time(17))] for d in range(5)})
REP = "rep-7"
REP_PARTITION = DefaultPartitioner()(REP.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
OTHER_PARTITION = (REP_PARTITION + 1) % PARTITIONS
MONDAY = date(2027, 1, 18)


def berlin(day: date, hour: int, minute: int = 0) -> float:
    return datetime.combine(day, time(hour, minute), tzinfo=BERLIN).timestamp()


def worker(table: dict[str, bytes]) -> tuple[BatchProcessor, ActivityFamily]:
    idle = IdleRule(EntityClocks(RecordLog(table, "ridle"), RULE, "rep_id"), {REP: "berlin"},
                    lambda team: time(11) if team == "berlin" else None, lambda team: HOURS, PARTITIONS)
    family = ActivityFamily(CellStore(table, "activity"), ZoneInfo("UTC"), 35 * 86400, idle=idle)
    processor = BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None)
    for partition in range(PARTITIONS):  # the worker's partitions are loaded before its alert clock ticks
        processor.ensure_loaded(partition)
    return processor, family


def call(n: int, at: float) -> bytes:
    return orjson.dumps({"event_id": f"call-{n}", "type": "call.logged", "lead_id": f"L{n}", "rep_id": REP,
                         "outcome": "no_answer", "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat()})


def clock(family: ActivityFamily, sinks: FakeSinks) -> AlertClock:
    return alert_clock(family.alert_sources, sinks, lambda: set(range(PARTITIONS)))


def deliver(processor: BatchProcessor, follow_ups: list[Any], offset: int, now: float) -> None:
    """What the worker does with a batch's follow-ups: write them to their key's partition (here: the rep's)."""
    assert follow_ups
    for event in follow_ups:
        assert event.partition_key == REP
        processor.process([(REP_PARTITION, offset, event_to_json(event), now)], now=now)


def test_the_deadline_is_the_local_time_on_business_days_only() -> None:
    assert deadline_on(HOURS, MONDAY, time(11)) == berlin(MONDAY, 11)
    assert deadline_on(HOURS, date(2027, 1, 16), time(11)) is None  # a Saturday


async def test_a_rep_idle_by_eleven_fires_once_and_resolves_at_the_first_call_made_in_another_partition() -> None:
    processor, family = worker({})
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    assert await alerts.tick(now=berlin(MONDAY, 8)) == 0  # arms today's clock
    assert await alerts.tick(now=berlin(MONDAY, 11) - 1) == 0
    assert await alerts.tick(now=berlin(MONDAY, 11, 0) + 0.5) == 1
    assert await alerts.tick(now=berlin(MONDAY, 11, 5)) == 0
    called = berlin(MONDAY, 11, 30)
    batch = processor.process([(OTHER_PARTITION, 0, call(1, called), called)], now=called)
    deliver(processor, batch.follow_ups, 0, called)
    assert await alerts.tick(now=called + 2) == 1
    firing, resolved = sinks.sent
    assert (firing["alert"], firing["status"], firing["rep_id"], firing["team"]) == (RULE, "firing", REP, "berlin")
    assert firing["deadline"] == datetime.fromtimestamp(berlin(MONDAY, 11), timezone.utc).isoformat()
    assert resolved["status"] == "resolved"
    assert resolved["emitted_at"] == datetime.fromtimestamp(called, timezone.utc).isoformat()


async def test_a_rep_who_called_before_eleven_never_fires_and_weekends_have_no_clock() -> None:
    processor, family = worker({})
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    await alerts.tick(now=berlin(MONDAY, 8))
    called = berlin(MONDAY, 9, 15)
    batch = processor.process([(OTHER_PARTITION, 0, call(1, called), called)], now=called)
    deliver(processor, batch.follow_ups, 0, called)
    later = processor.process([(OTHER_PARTITION, 1, call(2, called + 60), called + 60)], now=called + 60)
    assert later.follow_ups == []  # one rep.active per rep and day is enough
    assert await alerts.tick(now=berlin(MONDAY, 16)) == 0
    saturday = date(2027, 1, 23)
    assert await alerts.tick(now=berlin(saturday, 8)) == 0
    assert await alerts.tick(now=berlin(saturday, 12)) == 0
    assert sinks.sent == []


async def test_the_next_day_resolves_yesterdays_alert_and_arms_its_own_clock() -> None:
    _, family = worker({})
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    await alerts.tick(now=berlin(MONDAY, 8))
    await alerts.tick(now=berlin(MONDAY, 11, 1))
    tuesday = date(2027, 1, 19)
    await alerts.tick(now=berlin(tuesday, 0, 1))
    await alerts.tick(now=berlin(tuesday, 11, 1))
    assert [(a["status"], a["deadline"][:10]) for a in sinks.sent] == [
        ("firing", "2027-01-18"), ("resolved", "2027-01-18"), ("firing", "2027-01-19")]


async def test_the_armed_clock_survives_a_restart() -> None:
    table: dict[str, bytes] = {}
    _, family = worker(table)
    await clock(family, FakeSinks()).tick(now=berlin(MONDAY, 8))
    _, takeover = worker(dict(table))
    sinks = FakeSinks()
    takeover.idle._armed_at[REP_PARTITION] = berlin(MONDAY, 12)  # type: ignore[union-attr]  # no re-arming: the loaded clock fires
    assert await clock(takeover, sinks).tick(now=berlin(MONDAY, 11, 1)) == 1


def test_rep_no_activity_is_configured_per_team(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[alerts.rep_no_activity]\nby = "11:00"\nteams = { apac = "10:30" }\n')
    rule = load_config(path).alerts.rep_no_activity
    assert rule.by_for("apac") == time(10, 30) and rule.by_for("emea") == time(11)
    assert not load_config(None).alerts.rep_no_activity.enabled
