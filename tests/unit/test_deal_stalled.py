"""The ``deal_stalled`` rule: its deadline in business days, one firing per stall, resolving at the move,
and the clock surviving a crash and a new owner (``families.pipeline.stalls``, ``families.entity_clocks``)."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from salespulse.config import ConfigError, load_config
from salespulse.engine.alert_clock import AlertClock
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from salespulse.families.business_hours import BusinessHours
from salespulse.families.entity_clocks import EntityClocks
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.state import PIPELINE_CODEC
from salespulse.families.business_hours import business_days_after
from salespulse.families.pipeline.stalls import RULE, StallRule
from salespulse.outputs.alerts import clock_id
from tests.unit.alert_helpers import FakeSinks, alert_clock

OSLO = ZoneInfo("Europe/Oslo")
NINE_TO_FIVE = BusinessHours(tz=OSLO, weekly={d: [(time(9), time(17))] for d in range(5)},
                             holidays=frozenset({date(2026, 12, 24)}))
DAY = 86400.0


def oslo(*args: int) -> float:
    return datetime(*args, tzinfo=OSLO).timestamp()


# -- the deadline ---------------------------------------------------------------------------------------


def test_around_the_clock_a_stall_is_days_times_24_hours() -> None:
    assert business_days_after(BusinessHours.always(), 1_000.0, 2.5) == 1_000.0 + 2.5 * DAY


def test_a_friday_afternoon_entry_with_one_business_day_stalls_on_monday_afternoon() -> None:
    assert business_days_after(NINE_TO_FIVE, oslo(2026, 12, 4, 15, 0), 1) == oslo(2026, 12, 7, 15, 0)


def test_an_entry_after_hours_stalls_at_the_next_opening_after_the_same_time_n_business_days_later() -> None:
    # Friday 18:00 + 1 business day = Monday 18:00, closed: the next opening is Tuesday 09:00.
    assert business_days_after(NINE_TO_FIVE, oslo(2026, 12, 4, 18, 0), 1) == oslo(2026, 12, 8, 9, 0)


def test_holidays_are_not_business_days() -> None:
    # Wednesday 23 Dec 10:00 + 1: Thursday 24 Dec is a holiday, so Friday 25 Dec 10:00.
    assert business_days_after(NINE_TO_FIVE, oslo(2026, 12, 23, 10, 0), 1) == oslo(2026, 12, 25, 10, 0)


def test_the_local_time_is_kept_across_a_dst_change() -> None:
    # Friday 27 March 2026 10:00 CET + 1 business day = Monday 30 March 10:00 CEST (23 hours of UTC apart + 2 days).
    assert business_days_after(NINE_TO_FIVE, oslo(2026, 3, 27, 10, 0), 1) == oslo(2026, 3, 30, 10, 0)


# -- the rule in the pipeline family ----------------------------------------------------------------------

T0 = 1_800_000_000.0  # 2027-01-15, a Friday; the rule below runs around the clock


def worker(table: dict[str, bytes], days: float = 2.0) -> tuple[BatchProcessor, PipelineFamily]:
    stalls = StallRule(EntityClocks(RecordLog(table, "pstall"), RULE, "deal_id"),
                       {"default": {"proposal": days, "negotiation": days}}, lambda team: BusinessHours.always())
    family = PipelineFamily(CellStore(table, "pipeline"), RecordLog(table, "pstate", PIPELINE_CODEC), ZoneInfo("UTC"), 35 * DAY,
                            stalls=stalls)
    return BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None), family


def event(eid: str, kind: str, at: float, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": eid, "type": kind, "deal_id": "D1", "rep_id": "r1", "team": "emea",
                         "pipeline": "default", "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat(),
                         **fields})


def clock(family: PipelineFamily, sinks: FakeSinks) -> AlertClock:
    return alert_clock(family.alert_sources, sinks)


async def test_a_deal_left_in_a_stage_fires_once_at_its_deadline_and_resolves_when_it_moves() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), T0)], now=T0)
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    assert await alerts.tick(now=T0 + 2 * DAY - 1) == 0
    assert await alerts.tick(now=T0 + 2 * DAY + 0.1) == 1
    assert await alerts.tick(now=T0 + 2 * DAY + 5) == 0
    moved = T0 + 3 * DAY
    processor.process([(0, 1, event("e2", "deal.stage_changed", moved, from_stage="proposal", to_stage="won_later"), moved)],
                      now=moved)
    assert await alerts.tick(now=moved + 1) == 1
    assert await alerts.tick(now=moved + 2 * DAY) == 0  # an unconfigured stage never stalls
    firing, resolved = sinks.sent
    assert (firing["alert"], firing["status"], firing["deal_id"], firing["stage"], firing["team"]) == (
        RULE, "firing", "D1", "proposal", "emea")
    assert firing["deadline"] == datetime.fromtimestamp(T0 + 2 * DAY, timezone.utc).isoformat()
    assert resolved["status"] == "resolved" and resolved["emitted_at"] == datetime.fromtimestamp(moved, timezone.utc).isoformat()
    assert set(sinks.clock_ids) == {clock_id(firing)} == {clock_id(resolved)}


async def test_a_deal_that_moves_before_its_deadline_never_fires() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), T0)], now=T0)
    processor.process([(0, 1, event("e2", "deal.won", T0 + DAY), T0 + DAY)], now=T0 + DAY)
    sinks = FakeSinks()
    assert await clock(family, sinks).tick(now=T0 + 10 * DAY) == 0
    assert sinks.sent == []


async def test_a_deal_stalling_again_in_its_next_stage_is_a_new_alert_with_its_own_clock_id() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), T0)], now=T0)
    sinks = FakeSinks()
    alerts = clock(family, sinks)
    await alerts.tick(now=T0 + 2 * DAY + 1)
    moved = T0 + 2 * DAY + 10
    processor.process([(0, 1, event("e2", "deal.stage_changed", moved, from_stage="proposal", to_stage="negotiation"), moved)],
                      now=moved)
    await alerts.tick(now=moved + 1)
    await alerts.tick(now=moved + 2 * DAY + 1)
    assert [(alert["stage"], alert["status"]) for alert in sinks.sent] == [
        ("proposal", "firing"), ("proposal", "resolved"), ("negotiation", "firing")]
    assert len(set(sinks.clock_ids)) == 2


async def test_a_stage_entry_processed_after_its_deadline_is_history_and_never_pages() -> None:
    processor, family = worker({})
    late = T0 + 5 * DAY
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), late)], now=late)
    sinks = FakeSinks()
    assert await clock(family, sinks).tick(now=late + 1) == 0


async def test_a_new_owner_keeps_the_armed_clock_and_reads_back_what_a_crashed_owner_sent() -> None:
    table: dict[str, bytes] = {}
    processor, family = worker(table)
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), T0),
                       (0, 1, event("e3", "deal.created", T0, stage="proposal", deal_id="D2"), T0)], now=T0)
    assert family.stalls is not None
    family.stalls.clocks.due_alerts({0}, T0 + 2 * DAY + 1)  # fired and recorded; the crash comes before publishing
    sent_before = clock_id({"alert": RULE, "deal_id": "D1",
                            "started_at": datetime.fromtimestamp(T0, timezone.utc).isoformat()})
    new_owner, takeover = worker(dict(table))
    new_owner.ensure_loaded(0)
    sinks = FakeSinks(already={(sent_before, f"{RULE}:firing")})
    assert await clock(takeover, sinks).tick(now=T0 + 2 * DAY + 5) == 1
    assert [(alert["deal_id"], alert["status"]) for alert in sinks.sent] == [("D2", "firing")]


async def test_an_armed_clock_survives_a_restart_and_fires_from_the_loaded_state() -> None:
    table: dict[str, bytes] = {}
    processor, _ = worker(table)
    processor.process([(0, 0, event("e1", "deal.created", T0, stage="proposal"), T0)], now=T0)
    new_owner, takeover = worker(dict(table))
    new_owner.ensure_loaded(0)
    sinks = FakeSinks()
    assert await clock(takeover, sinks).tick(now=T0 + 2 * DAY + 1) == 1


def test_stalled_after_days_names_only_open_stages_of_its_pipeline(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[pipelines.sales]\nstages = ["a", "b"]\nwon_stages = ["won"]\n'
                    '[pipelines.sales.stalled_after_days]\nwon = 3\n')
    with pytest.raises(ConfigError, match="stalled_after_days"):
        load_config(path)


def test_stalled_after_days_is_read_per_pipeline_and_stage(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[pipelines.sales]\nstages = ["a", "b"]\n[pipelines.sales.stalled_after_days]\na = 3\nb = 0.5\n')
    assert load_config(path).pipelines["sales"].stalled_after_days == {"a": 3.0, "b": 0.5}
