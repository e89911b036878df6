"""The pre-breach warning: at a share of the SLA (business time), once per lead, resolved by the touch or the
breach; its published keys; what the states hand Alertmanager on each resend."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson

from salespulse.config import Config
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from salespulse.families.lead_response.build import deadline_function, warning_function
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.outputs.alerts import published_key

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC, a Friday
SLA = 300.0


def worker(table: dict[str, bytes], config: Config | None = None) -> tuple[BatchProcessor, LeadResponseFamily]:
    config = config or Config()
    family = LeadResponseFamily(
        CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), ZoneInfo("UTC"), 35 * 86400, SLA,
        deadline_of=deadline_function(config, SLA), warn_of=warning_function(config, SLA),
    )
    return BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None), family


def event(kind: str, lead: str, at: float, n: int = 0, team: str = "emea") -> bytes:
    when = datetime.fromtimestamp(at, timezone.utc).isoformat()
    if kind == "created":
        body = {"event_id": f"c-{lead}", "type": "lead.created", "lead_id": lead, "rep_id": "r1", "team": team,
                "source": "web", "occurred_at": when}
    else:
        body = {"event_id": f"t-{lead}-{n}", "type": "call.logged", "lead_id": lead, "rep_id": "r2",
                "outcome": "no_answer", "occurred_at": when}
    return orjson.dumps(body)


def statuses(family: LeadResponseFamily, partitions: set[int] = {0}) -> list[tuple[str, str, str]]:
    return [(a["alert"], a["lead_id"], a["status"]) for _, _, a in family.pending_alerts(partitions)]


def publish(family: LeadResponseFamily) -> None:
    family.mark_published((p, lead, published_key(a)) for p, lead, a in family.pending_alerts({0}))


def test_the_warning_fires_once_at_eighty_percent_of_the_sla_and_resolves_at_the_touch() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("created", "L1", NOW))], now=NOW)
    assert family.due_alerts({0}, NOW + 0.8 * SLA - 0.01) == 0
    assert family.due_alerts({0}, NOW + 0.8 * SLA) == 1
    assert statuses(family) == [("lead_response_warning", "L1", "firing")]
    alert = family.pending_alerts({0})[0][2]
    assert alert["deadline"] == "2027-01-15T08:04:00+00:00" and alert["sla_deadline"] == "2027-01-15T08:05:00+00:00"
    publish(family)
    assert family.due_alerts({0}, NOW + 0.9 * SLA) == 0 and statuses(family) == []  # once per lead
    processor.process([(0, 1, event("touch", "L1", NOW + 250))], now=NOW + 250)
    assert statuses(family) == [("lead_response_warning", "L1", "resolved")]
    publish(family)
    assert family.due_alerts({0}, NOW + 2 * SLA) == 0 and statuses(family) == []  # touched: no breach


def test_the_breach_resolves_the_warning_and_fires_with_the_same_rep_team_and_source() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("created", "L1", NOW))], now=NOW)
    family.due_alerts({0}, NOW + 0.8 * SLA)
    publish(family)
    assert family.due_alerts({0}, NOW + SLA) == 1
    assert statuses(family) == [("lead_response_sla", "L1", "firing"), ("lead_response_warning", "L1", "resolved")]
    labels = {(a["rep_id"], a["team"], a["source"]) for _, _, a in family.pending_alerts({0})}
    assert labels == {("r1", "emea", "web")}


def test_a_worker_down_past_the_deadline_fires_the_breach_without_a_stale_warning() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("created", "L1", NOW), NOW)], now=NOW)
    family.due_alerts({0}, NOW + SLA + 60)
    assert statuses(family) == [("lead_response_sla", "L1", "firing")]


def test_warn_fraction_zero_turns_the_warning_off() -> None:
    config = Config.model_validate({"lead_response": {"warn_fraction": 0}})
    processor, family = worker({}, config)
    processor.process([(0, 0, event("created", "L1", NOW))], now=NOW)
    family.due_alerts({0}, NOW + 0.9 * SLA)
    assert statuses(family) == []
    family.due_alerts({0}, NOW + SLA)
    assert statuses(family) == [("lead_response_sla", "L1", "firing")]


def test_the_warning_runs_in_business_hours() -> None:
    hours = {"timezone": "UTC", "hours": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}
    config = Config.model_validate({"business_hours": {"teams": {"emea": hours}}})
    processor, family = worker({}, config)
    friday_evening = NOW + 9 * 3600 - 100  # 16:58:20 Friday: 100 s open today, 140 more on Monday
    processor.process([(0, 0, event("created", "L1", friday_evening), friday_evening)], now=friday_evening)
    monday_nine = NOW + 3 * 86400 + 3600
    assert family.due_alerts({0}, monday_nine + 139) == 0
    assert family.due_alerts({0}, monday_nine + 140) == 1
    assert statuses(family) == [("lead_response_warning", "L1", "firing")]


def test_a_new_owner_keeps_the_warning_clock_and_never_warns_twice() -> None:
    table: dict[str, bytes] = {}
    processor, family = worker(table)
    processor.process([(0, 0, event("created", "L1", NOW)), (0, 1, event("created", "L2", NOW + 10))], now=NOW)
    family.due_alerts({0}, NOW + 0.8 * SLA)  # L1 warned (state written), not published yet
    new_processor, new_family = worker(dict(table))
    new_processor.ensure_loaded(0)
    assert 0 in new_family.inherited_unpublished
    assert statuses(new_family) == [("lead_response_warning", "L1", "firing")]
    publish(new_family)
    assert new_family.due_alerts({0}, NOW + 10 + 0.8 * SLA) == 1  # L2's clock came along
    assert statuses(new_family) == [("lead_response_warning", "L2", "firing")]


def test_the_states_hand_alertmanager_firing_alerts_and_recent_resolutions_only() -> None:
    processor, family = worker({})
    processor.process([(0, 0, event("created", "L1", NOW)), (0, 1, event("created", "L2", NOW))], now=NOW)
    family.due_alerts({0}, NOW + SLA)
    processor.process([(0, 2, event("touch", "L2", NOW + SLA + 5))], now=NOW + SLA + 5)
    active = family.active_alerts({0}, NOW + SLA + 10, resolved_within_s=60)
    assert sorted((a["lead_id"], a["status"]) for a in active) == [("L1", "firing"), ("L2", "resolved")]
    firing = next(a for a in active if a["lead_id"] == "L1")
    assert firing["age_seconds"] == SLA + 10  # stamped at the resend
    later = family.active_alerts({0}, NOW + SLA + 100, resolved_within_s=60)
    assert [(a["lead_id"], a["status"]) for a in later] == [("L1", "firing")]
    assert family.alerting[0] == {"L1"}
