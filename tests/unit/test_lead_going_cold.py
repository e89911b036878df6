"""The ``lead_going_cold`` rule: a lead touched once and not again within N business days fires once at
that deadline, resolves at the next touch, keeps its clock through a restart, and never pages for history."""

from __future__ import annotations

from datetime import datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from salespulse.config import load_config
from salespulse.engine.alert_clock import AlertClock
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from salespulse.families.business_hours import BusinessHours
from salespulse.families.engagement.cold import RULE, ColdRule
from salespulse.families.engagement.family import EngagementFamily
from salespulse.families.engagement.state import OUTREACH_CODEC
from salespulse.families.entity_clocks import EntityClocks
from tests.unit.alert_helpers import FakeSinks, alert_clock

DAY = 86400.0
NY = ZoneInfo("America/New_York")
# Monday-Friday 08:00-18:00 in New York for team "us"; around the clock for the others.
US_HOURS = BusinessHours(tz=NY, weekly={d: [(time(8), time(18))] for d in range(5)})
T0 = datetime(2027, 1, 15, 16, 0, tzinfo=NY).timestamp()  # a Friday, 16:00 in New York


def worker(table: dict[str, bytes]) -> tuple[BatchProcessor, EngagementFamily]:
    cold = ColdRule(EntityClocks(RecordLog(table, "ecold"), RULE, "lead_id"), {"us": 2.0, "emea": 1.0}.get,
                    lambda team: US_HOURS if team == "us" else BusinessHours.always())
    family = EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), ZoneInfo("UTC"), 35 * DAY,
                              cold=cold)
    return BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None), family


def call(lead: str, n: int, at: float, team: str = "us") -> bytes:
    return orjson.dumps({"event_id": f"call-{lead}-{n}", "type": "call.logged", "lead_id": lead, "rep_id": "r1",
                         "team": team, "outcome": "no_answer",
                         "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat()})


def clock(family: EngagementFamily, sinks: FakeSinks) -> AlertClock:
    return alert_clock(family.alert_sources, sinks)


async def test_a_lead_touched_once_goes_cold_after_n_business_days_skipping_the_weekend() -> None:
    processor, family = worker({})
    processor.process([(0, 0, call("L1", 0, T0), T0)], now=T0)
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    tuesday_16 = datetime(2027, 1, 19, 16, 0, tzinfo=NY).timestamp()  # Friday 16:00 + 2 business days
    assert await alerts.tick(now=T0 + 2 * DAY + 1) == 0  # Sunday: calendar days do not count
    assert await alerts.tick(now=tuesday_16 - 1) == 0
    assert await alerts.tick(now=tuesday_16 + 0.1) == 1
    assert await alerts.tick(now=tuesday_16 + 60) == 0
    (firing,) = sinks.sent
    assert (firing["alert"], firing["status"], firing["lead_id"], firing["rep_id"], firing["team"]) == (
        RULE, "firing", "L1", "r1", "us")
    assert firing["deadline"] == datetime.fromtimestamp(tuesday_16, timezone.utc).isoformat()


async def test_the_second_touch_resolves_a_cold_lead_and_disarms_a_warm_one() -> None:
    processor, family = worker({})
    processor.process([(0, 0, call("L1", 0, T0, "emea"), T0), (0, 1, call("L2", 0, T0, "emea"), T0)], now=T0)
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    processor.process([(0, 2, call("L2", 1, T0 + 3600, "emea"), T0 + 3600)], now=T0 + 3600)  # L2 followed up in time
    assert await alerts.tick(now=T0 + DAY + 1) == 1
    later = T0 + DAY + 100
    processor.process([(0, 3, call("L1", 1, later, "emea"), later)], now=later)
    assert await alerts.tick(now=later + 1) == 1
    assert [(a["lead_id"], a["status"]) for a in sinks.sent] == [("L1", "firing"), ("L1", "resolved")]


async def test_a_team_without_the_rule_never_goes_cold_and_history_never_pages() -> None:
    processor, family = worker({})
    late = T0 + 10 * DAY
    processor.process([(0, 0, call("L1", 0, T0, "apac"), T0), (0, 1, call("L2", 0, T0, "emea"), late)], now=late)
    sinks = FakeSinks()
    assert await clock(family, sinks).tick(now=late + 30 * DAY) == 0


async def test_the_cold_clock_survives_a_restart() -> None:
    table: dict[str, bytes] = {}
    processor, _ = worker(table)
    processor.process([(0, 0, call("L1", 0, T0, "emea"), T0)], now=T0)
    new_owner, family = worker(dict(table))
    new_owner.ensure_loaded(0)
    sinks = FakeSinks()
    assert await clock(family, sinks).tick(now=T0 + DAY + 1) == 1


def test_lead_going_cold_is_configured_for_every_team_with_per_team_overrides(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[alerts.lead_going_cold]\ndays = 3\nteams = { emea = 2 }\n")
    cold = load_config(path).alerts.lead_going_cold
    assert cold.enabled and cold.days_for("emea") == 2 and cold.days_for("us") == 3
    assert not load_config(None).alerts.lead_going_cold.enabled
