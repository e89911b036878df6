"""The traffic generator: contract-valid, reproducible, causally ordered, and roughly the promised mix."""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from salespulse.models.events import EVENT_TYPES, EventAdapter
from salespulse.simulate import LEAD_SOURCES, LOSS_REASONS, STAGES, TrafficModel, build_roster

START = 1_700_000_000.0
FAR = START + 10**8  # long after every lifecycle has ended
TOUCHES = {"call.logged", "email.sent", "meeting.booked", "activity.logged"}
ENGAGEMENT = {"email.opened", "email.clicked", "email.replied", "email.bounced"}


def world(seed: int = 42, leads: int = 3000, **kw: Any) -> list[dict[str, Any]]:
    model = TrafficModel(
        random.Random(seed), start=START, leads_per_minute=600, max_leads=leads, id_prefix=f"sim-{seed}", **kw
    )
    events = model.due(FAR)
    assert model.next_due is None  # with max_leads the world runs dry
    return events


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return world()


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def test_every_event_validates_and_uses_an_offset(events: list[dict[str, Any]]) -> None:
    for e in events:
        EventAdapter.validate_python(e)
        assert e["type"] in EVENT_TYPES
        assert datetime.fromisoformat(e["occurred_at"]).utcoffset() is not None
        assert re.search(r"[+-]\d\d:\d\d$|Z$", e["occurred_at"])


def test_event_ids_are_unique_and_prefixed(events: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("sim-42-") for i in ids)


def test_events_come_out_in_time_order(events: list[dict[str, Any]]) -> None:
    times = [ts(e) for e in events]
    assert times == sorted(times)
    assert times[0] >= START


def test_same_seed_same_events_whatever_the_tick() -> None:
    whole = world(seed=7, leads=300)
    model = TrafficModel(random.Random(7), start=START, leads_per_minute=600, max_leads=300, id_prefix="sim-7")
    ticked: list[dict[str, Any]] = []
    now = START
    while model.next_due is not None:
        now += 0.2 if now < START + 120 else 3600  # fine ticks first, then coarse ones
        ticked.extend(model.due(now))
    assert ticked == whole
    assert world(seed=8, leads=300) != whole


def test_speedup_divides_every_delay() -> None:
    slow = world(seed=3, leads=200)
    fast = world(seed=3, leads=200, speedup=60.0)
    assert [e["event_id"] for e in fast] == [e["event_id"] for e in slow]
    for s, f in zip(slow, fast):
        assert (ts(f) - START) == pytest.approx((ts(s) - START) / 60, abs=0.002)


def test_only_ids_no_emails_or_names(events: list[dict[str, Any]]) -> None:
    for e in events:
        for value in e.values():
            assert "@" not in str(value)
        if "rep_id" in e:
            assert re.fullmatch(r"rep-\d{3}", e["rep_id"])
        if "team" in e:
            assert re.fullmatch(r"team-[a-z0-9]+", e["team"])


def test_roster_is_stable_and_spread() -> None:
    roster = build_roster(10, 3)
    assert [r.rep_id for r in roster][:3] == ["rep-001", "rep-002", "rep-003"]
    assert Counter(r.team for r in roster) == {"team-emea": 4, "team-amer": 3, "team-apac": 3}
    assert build_roster(10, 3) == roster
    with pytest.raises(ValueError):
        build_roster(2, 3)


def test_lifecycle_causality(events: list[dict[str, Any]]) -> None:
    created: dict[str, float] = {}
    sent: dict[str, tuple[str, float]] = {}
    deals: dict[str, str] = {}  # deal_id -> current stage
    closed: set[str] = set()
    for e in events:
        t, kind = ts(e), e["type"]
        if kind == "lead.created":
            assert e["lead_id"] not in created
            created[e["lead_id"]] = t
        elif "lead_id" in e and kind != "deal.created":
            assert e["lead_id"] in created and t >= created[e["lead_id"]], e
        if kind == "email.sent":
            sent[e["email_id"]] = (e["lead_id"], t)
        elif kind in ENGAGEMENT:
            lead_id, sent_at = sent[e["email_id"]]
            assert e["lead_id"] == lead_id and t >= sent_at
        elif kind == "deal.created":
            assert e["lead_id"] in created and e["stage"] == STAGES[0]
            assert 2_000 <= e["amount"] <= 80_000 and 0 <= e["probability"] <= 1
            deals[e["deal_id"]] = e["stage"]
        elif kind == "deal.stage_changed":
            assert e["deal_id"] in deals and e["deal_id"] not in closed
            assert e["from_stage"] == deals[e["deal_id"]] and e["to_stage"] in STAGES
            deals[e["deal_id"]] = e["to_stage"]
        elif kind in ("deal.won", "deal.lost"):
            assert e["deal_id"] in deals and e["deal_id"] not in closed and e["pipeline"] == "default"
            closed.add(e["deal_id"])
            if kind == "deal.won":
                assert deals[e["deal_id"]] == "negotiation" and e["amount"] > 0
    assert closed == set(deals)  # every deal ends, given time


def test_first_touch_after_creation_and_the_promised_shape(events: list[dict[str, Any]]) -> None:
    created = {e["lead_id"]: ts(e) for e in events if e["type"] == "lead.created"}
    first: dict[str, float] = {}
    for e in events:
        if e["type"] in TOUCHES and e["lead_id"] not in first:
            assert e["type"] in ("call.logged", "email.sent")  # always a contract outbound touch
            first[e["lead_id"]] = ts(e) - created[e["lead_id"]]
    assert len(created) == 3000
    assert min(first.values()) > 0
    assert 90 <= statistics.median(first.values()) <= 160  # ~2 minutes
    late = sum(d > 300 for d in first.values()) / len(first)
    assert 0.14 <= late <= 0.27  # ~20 % beyond the 5-minute SLA
    never = 1 - len(first) / len(created)
    assert 0.01 <= never <= 0.06  # a few are never touched


def test_mix_of_sources_and_activities(events: list[dict[str, Any]]) -> None:
    by_type = Counter(e["type"] for e in events)
    leads = [e for e in events if e["type"] == "lead.created"]
    assert 0.25 <= sum(e["mql"] for e in leads) / len(leads) <= 0.35
    sources = Counter(e["source"] for e in leads)
    assert set(sources) == set(LEAD_SOURCES)
    assert sources.most_common(1)[0][0] == "google_ads"
    assert sources["google_ads"] > 2 * sources["referral"]
    assert 0.05 <= by_type["lead.assigned"] / len(leads) <= 0.3

    calls = [e for e in events if e["type"] == "call.logged"]
    outcomes = Counter(e["outcome"] for e in calls)
    assert set(outcomes) == {"connected", "no_answer", "voicemail", "busy"}
    assert 0.10 <= outcomes["connected"] / len(calls) <= 0.20

    emails = [e for e in events if e["type"] == "email.sent"]
    assert 0.33 <= sum(e["personalized"] for e in emails) / len(emails) <= 0.47
    opens = Counter(e["email_id"] for e in events if e["type"] == "email.opened")
    assert max(opens.values()) > 1  # repeated opens happen
    assert all(by_type[t] > 0 for t in ENGAGEMENT)

    kinds = Counter(e["kind"] for e in events if e["type"] == "activity.logged")
    assert set(kinds) == {"linkedin_message", "visit"}
    assert all(e["outbound"] for e in events if e["type"] == "activity.logged")
    meetings = Counter(e["kind"] for e in events if e["type"] == "meeting.held")
    assert set(meetings) == {"first", "demo", "follow_up"}

    assert 0.03 <= by_type["deal.created"] / len(leads) <= 0.25
    assert by_type["lead.converted"] == by_type["deal.created"]
    win_rate = by_type["deal.won"] / (by_type["deal.won"] + by_type["deal.lost"])
    assert 0.1 <= win_rate <= 0.5
    reasons = {e["reason"] for e in events if e["type"] == "deal.lost"}
    assert len(reasons) > 2
    directions = {
        STAGES.index(e["to_stage"]) > STAGES.index(e["from_stage"]) for e in events if e["type"] == "deal.stage_changed"
    }
    assert directions == {True, False}  # forward and (occasionally) backward


def test_quotas_for_every_rep_at_start() -> None:
    events = world(seed=5, leads=1, reps=6, teams=2)
    quotas = [e for e in events if e["type"] == "quota.set"]
    assert sorted(e["rep_id"] for e in quotas) == [f"rep-{i:03d}" for i in range(1, 7)]
    assert all(e["period"] == "2023-11" and ts(e) == START for e in quotas)
    assert not [e for e in world(seed=5, leads=1, quotas=False) if e["type"] == "quota.set"]


def test_pipeline_traffic_has_qualified_leads_upsells_and_deals_linked_to_their_leads(
    events: list[dict[str, Any]],
) -> None:
    created = {e["lead_id"]: e for e in events if e["type"] == "lead.created"}
    qualified = [e for e in events if e["type"] == "lead.qualified"]
    assert qualified and all(not created[e["lead_id"]]["mql"] for e in qualified)
    deals = [e for e in events if e["type"] == "deal.created"]
    assert all(e["lead_id"] in created for e in deals)
    assert 0.05 <= sum(e["kind"] == "upsell" for e in deals) / len(deals) <= 0.15
    assert {e["reason"] for e in events if e["type"] == "deal.lost"} <= set(LOSS_REASONS)


def test_the_simulated_pipeline_is_the_built_in_default_one() -> None:
    from salespulse.config import Config
    from salespulse.simulate import PIPELINE, _STAGE_PROBABILITY

    pipelines = Config().pipeline_specs()
    assert pipelines.funnel(PIPELINE) == STAGES
    assert [pipelines.default_probability(PIPELINE, s) for s in STAGES] == list(_STAGE_PROBABILITY)


def test_simulated_traffic_exercises_the_engagement_family(events: list[dict[str, Any]]) -> None:
    """Opens and clicks name no rep (tracking knows the email only) and still count for the sender; every
    channel, a personalised share, first meetings with next steps and conversions show up."""
    from zoneinfo import ZoneInfo

    import orjson

    from salespulse.families.engagement.spec import derived_fields
    from salespulse.engine.cells import CellStore
    from salespulse.engine.dedup import DedupIndex
    from salespulse.families.engagement.family import EngagementFamily
    from salespulse.families.engagement.state import OUTREACH_CODEC
    from salespulse.engine.processor import BatchProcessor
    from salespulse.engine.record_log import RecordLog

    tracked = [e for e in events if e["type"] in ("email.opened", "email.clicked")]
    assert tracked and not any("rep_id" in e for e in tracked)
    assert all("rep_id" in e for e in events if e["type"] == "email.replied")

    table: dict[str, bytes] = {}
    family = EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), ZoneInfo("UTC"), 10**9, quiet_s=6 * 3600)
    processor = BatchProcessor(DedupIndex(table, 10**9), [family], lambda r, why: None)
    processor.process([(0, i, orjson.dumps(e)) for i, e in enumerate(events)], now=FAR)
    sent_by = Counter(e["rep_id"] for e in events if e["type"] == "email.sent")
    reps = family.all_time({0}, "rep")
    assert {rep: fields.get("emails_sent") for rep, fields in reps.items() if fields.get("emails_sent")} == sent_by
    total = family.all_time({0}, "team")
    merged: dict[str, float] = {}
    for fields in total.values():
        for name, value in fields.items():
            merged[name] = merged.get(name, 0) + value
    rates = derived_fields(merged)
    assert 0.15 <= rates["open_rate"] <= 0.6 and 0 < rates["click_rate"] < rates["open_rate"]
    assert 0.30 <= rates["personalized_share"] <= 0.50
    assert 0.10 <= rates["contact_rate:call"] <= 0.20 and 0 < rates["contact_rate:email"] < 0.2
    assert 0.5 <= rates["contact_rate:meeting"] <= 1.0
    assert merged["attempts:social"] > 0 and merged["attempts:other"] > 0
    assert 0 < rates["next_step_rate"] <= 1 and merged["leads_converted"] > 0 and merged["leads_quiet"] > 0
