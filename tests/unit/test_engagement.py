"""Engagement (METRICS.md section 3): email engagement, contact rate by channel and its conversion to won,
personalised emails, follow-up depth, activity ratios, and the rep / team / target fields of the partials.

The family runs through a ``BatchProcessor`` over a plain dict table (standing for the changelogged Faust
table). A crash is a new worker over (a copy of) the dict that re-processes from the last commit.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salespulse.families.engagement.rules import batch_recompute, channel_of_activity, contribution
from salespulse.families.engagement.state import OUTREACH_CODEC, Lead
from salespulse.families.engagement.spec import ADDITIVE_FIELDS, derived_fields
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.engagement.family import TEAMS_CELL, EngagementFamily
from salespulse.engine.processor import BatchProcessor, Record
from salespulse.engine.record_log import RecordLog
from tests.unit.log_support import RecordingTable, crash_mid_write, records

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
QUIET_S = 3 * DAY
TEAMS = {"anna": "north", "ben": "north", "cleo": "south"}
_ids = itertools.count()


def decoded(leads: list[dict[str, Any]]) -> list[Lead]:
    """Leads written as their JSON form (as the changelog holds them), as the family keeps them."""
    return [OUTREACH_CODEC.decode("", lead) for lead in leads]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def ev(type_: str, lead: str, at: float, rep: str | None = "anna", eid: str | None = None, **fields: Any) -> dict[str, Any]:
    """An event of type ``type_`` about ``lead``; required fields filled in, ``fields`` override."""
    n = next(_ids)
    event: dict[str, Any] = {"event_id": eid or f"{type_}-{lead}-{n}", "type": type_, "occurred_at": iso(at), "lead_id": lead}
    if rep is not None:
        event["rep_id"] = rep
    if type_ == "call.logged":
        event["outcome"] = "no_answer"
    elif type_ == "email.sent":
        event["email_id"] = f"m{n}"
    elif type_ in ("meeting.booked", "meeting.held"):
        event["meeting_id"] = f"g{n}"
    elif type_ == "activity.logged":
        event["kind"] = "visit"
        event["outbound"] = True
    elif type_ == "lead.converted":
        event["deal_id"] = f"D-{lead}"
    elif type_ == "lead.deal_closed":
        event |= {"deal_id": f"D-{lead}", "pipeline": "default", "outcome": "won", "amount": 1000}
    return event | fields


class Worker:
    """Dedup + engagement family + processor over a table, as ``WorkerRuntime`` builds them."""

    def __init__(
        self, table: dict[str, bytes] | None = None, quiet_s: float = QUIET_S, targets: Any = None,
        decoded_limit: int | None = None,
    ) -> None:
        self.table: dict[str, bytes] = RecordingTable() if table is None else table
        self.family = EngagementFamily(
            CellStore(self.table, "engagement"),
            RecordLog(self.table, "outreach", OUTREACH_CODEC, decoded_limit),
            UTC,
            35 * DAY,
            quiet_s=quiet_s,
            team_of_rep=TEAMS,
            outbound_kinds=("visit",),
            targets=targets,
        )
        self.dead: list[tuple[Record, str]] = []
        self.processor = BatchProcessor(
            DedupIndex(self.table, 72 * HOUR), [self.family], lambda r, why: self.dead.append((r, why))
        )
        self.next_offset: dict[int, int] = {}

    def process(self, batch: Sequence[Record], now: float = NOW) -> Any:
        stats = self.processor.process(batch, now)
        assert not self.dead, self.dead
        for partition, offset, *_ in batch:
            self.next_offset[partition] = max(self.next_offset.get(partition, 0), offset + 1)
        return stats

    def send(self, events: Sequence[dict[str, Any]], now: float = NOW, partition: int = 0) -> Any:
        return self.process(records(partition, events, self.next_offset.get(partition, 0)), now)

    def fields(self, scope: str, ident: str) -> dict[str, float]:
        """All-time fields of one id over the loaded partitions, zeros left out."""
        return nonzero(self.family.all_time(self.processor.loaded, scope).get(ident, {}))

    def rates(self, scope: str, ident: str) -> dict[str, float]:
        return derived_fields(self.fields(scope, ident))


def nonzero(fields: Mapping[str, float]) -> dict[str, float]:
    return {name: value for name, value in fields.items() if value}


def normalise(totals: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[tuple[str, str], dict[str, float]]:
    return {key: nonzero(fields) for key, fields in totals.items() if nonzero(fields)}


def table_totals(table: Mapping[str, bytes], grain: str = "all") -> dict[tuple[str, str], dict[str, float]]:
    """Fields per (scope, id) of every ``engagement`` cell of ``grain``, from the durable table."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for key, raw in table.items():
        _partition, prefix, name = key.split("|", 2)
        if prefix != "engagement" or not name.startswith(f"{grain}|"):
            continue
        cell = orjson.loads(raw)
        for scope in ("rep", "team", "source", "rep_team"):
            for ident, fields in cell.get(scope, {}).items():
                into = totals.setdefault((scope, ident), {})
                for field, value in fields.items():
                    into[field] = into.get(field, 0) + value
    return normalise(totals)


# --- the seed examples (seed 003) -------------------------------------------------------------------------------


def seed_003_leads() -> list[dict[str, Any]]:
    """1000 leads emailed, 400 reply, 8 of those buy; 1000 leads called, 100 connect, 98 of those buy."""
    leads = []
    for i in range(1000):
        replied = i < 400
        emails = {f"m{i}": {"at": NOW, "rep": "anna", "team": "north", "personalized": False, "replied": replied}}
        leads.append({"emails": emails, "won": NOW + DAY if replied and i < 8 else None})
    for i in range(1000):
        connected = i < 100
        touches = [[NOW, "call", "ben", "north", connected, f"c{i}"]]
        leads.append({"touches": touches, "won": NOW + DAY if connected and i < 98 else None})
    return leads


def test_seed_003_email_reaches_40_percent_and_2_percent_of_those_convert_pure() -> None:
    rates = derived_fields(batch_recompute(decoded(seed_003_leads()))[("rep", "anna")])
    assert rates["contact_rate:email"] == pytest.approx(0.40)
    assert rates["conversion_rate:email"] == pytest.approx(0.02)
    assert rates["reply_rate"] == pytest.approx(0.40)


def test_seed_003_phone_reaches_10_percent_and_nearly_all_of_those_buy_pure() -> None:
    rates = derived_fields(batch_recompute(decoded(seed_003_leads()))[("rep", "ben")])
    assert rates["contact_rate:call"] == pytest.approx(0.10)
    assert rates["conversion_rate:call"] == pytest.approx(0.98)
    team = derived_fields(batch_recompute(decoded(seed_003_leads()))[("team", "north")])
    assert team["contact_rate:call"] == pytest.approx(0.10) and team["contact_rate:email"] == pytest.approx(0.40)


def test_seed_003_channel_rates_in_the_stream() -> None:
    w = Worker()
    events: list[dict[str, Any]] = []
    for i in range(100):  # a tenth of the seed: 100 emailed, 40 reply, 1 of those won (2.5 %)
        lead = f"E{i}"
        sent = ev("email.sent", lead, NOW - 2 * DAY, email_id=f"mail-{i}")
        events.append(sent)
        if i < 40:
            events.append(ev("email.replied", lead, NOW - DAY, rep=None, email_id=f"mail-{i}"))
        if i < 1:
            events.append(ev("lead.deal_closed", lead, NOW - HOUR, rep=None))
    for i in range(100):  # 100 called, 10 connect, 9 won
        lead = f"P{i}"
        events.append(ev("call.logged", lead, NOW - 2 * DAY, rep="ben", outcome="connected" if i < 10 else "busy"))
        if i < 9:
            events.append(ev("lead.deal_closed", lead, NOW - HOUR, rep=None))
    w.send(events)
    anna, ben = w.rates("rep", "anna"), w.rates("rep", "ben")
    assert (anna["contact_rate:email"], anna["conversion_rate:email"]) == (0.40, 1 / 40)
    assert (ben["contact_rate:call"], ben["conversion_rate:call"]) == (0.10, 0.90)


# --- email engagement -------------------------------------------------------------------------------------------


def test_each_email_counts_once_per_kind_however_often_it_is_opened() -> None:
    w = Worker()
    w.send(
        [
            ev("email.sent", "L1", NOW - HOUR, email_id="a"),
            ev("email.sent", "L1", NOW - HOUR, email_id="b"),
            *(ev("email.opened", "L1", NOW - 50 * MINUTE + i, rep=None, email_id="a") for i in range(5)),
            ev("email.clicked", "L1", NOW - 40 * MINUTE, rep=None, email_id="a"),
            ev("email.clicked", "L1", NOW - 39 * MINUTE, rep=None, email_id="a"),
            ev("email.bounced", "L1", NOW - 40 * MINUTE, rep=None, email_id="b"),
        ]
    )
    fields = w.fields("rep", "anna")
    assert {k: fields.get(k) for k in ("emails_sent", "emails_opened", "emails_clicked", "emails_bounced")} == {
        "emails_sent": 2, "emails_opened": 1, "emails_clicked": 1, "emails_bounced": 1
    }
    assert w.rates("rep", "anna")["open_rate"] == 0.5
    assert w.family.email_event_totals({0}) == {
        ("anna", "north", "opened"): 1, ("anna", "north", "clicked"): 1, ("anna", "north", "bounced"): 1
    }


def test_engagement_without_rep_or_with_another_rep_is_credited_to_the_sender() -> None:
    w = Worker()
    w.send([
        ev("email.sent", "L1", NOW - HOUR, rep="cleo", email_id="a"),
        ev("email.opened", "L1", NOW - 30 * MINUTE, rep=None, email_id="a"),
        ev("email.replied", "L1", NOW - 20 * MINUTE, rep="anna", email_id="a"),  # a CRM that names the owner
    ])
    assert w.fields("rep", "cleo")["emails_opened"] == 1 and w.fields("rep", "cleo")["emails_replied"] == 1
    assert "emails_replied" not in w.fields("rep", "anna")
    assert w.fields("team", "south")["connected:email"] == 1
    assert w.family.email_event_totals({0}) == {("cleo", "south", "opened"): 1, ("cleo", "south", "replied"): 1}


def test_engagement_arriving_before_its_send_counts_once_the_send_arrives() -> None:
    w = Worker()
    w.send([ev("email.opened", "L1", NOW - 30 * MINUTE, rep=None, email_id="a"),
            ev("email.opened", "L1", NOW - 29 * MINUTE, rep=None, email_id="a")])
    assert w.fields("rep", "anna") == {} and w.family.email_event_totals({0}) == {}
    w.send([ev("email.sent", "L1", NOW - HOUR, rep="anna", email_id="a")])
    assert w.fields("rep", "anna")["emails_opened"] == 1
    assert w.family.email_event_totals({0}) == {("anna", "north", "opened"): 1}


def test_engagement_lands_in_the_window_of_the_send() -> None:
    w = Worker()
    sent_at = datetime(2026, 11, 20, 23, 0, tzinfo=timezone.utc).timestamp()
    w.send([ev("email.sent", "L1", sent_at, email_id="a"), ev("email.opened", "L1", NOW, rep=None, email_id="a")])
    day = table_totals(w.table, "day")
    assert day[("rep", "anna")]["emails_opened"] == 1
    cells = {k.split("|", 2)[2] for k in w.table if k.split("|")[1] == "engagement"}
    assert "day|2026-11-20" in cells and "day|2026-11-22" not in cells


def test_personalised_and_generic_emails_per_rep_per_month() -> None:
    w = Worker()
    w.send([
        ev("email.sent", "L1", NOW - DAY, personalized=True),
        ev("email.sent", "L2", NOW - DAY, personalized=True),
        ev("email.sent", "L3", NOW - DAY, personalized=False),
        ev("email.sent", "L4", NOW - DAY),  # not said: generic
    ])
    month = table_totals(w.table, "month")[("rep", "anna")]
    assert (month["emails_personalized"], month["emails_generic"]) == (2, 2)
    assert derived_fields(month)["personalized_share"] == 0.5


# --- contact rate by channel ------------------------------------------------------------------------------------


def test_contact_rate_counts_connected_calls_replied_emails_and_held_meetings() -> None:
    w = Worker()
    w.send([
        ev("call.logged", "L1", NOW - HOUR, outcome="connected"),
        ev("call.logged", "L1", NOW - HOUR, outcome="voicemail"),
        ev("email.sent", "L1", NOW - HOUR, email_id="a"),
        ev("email.sent", "L1", NOW - HOUR, email_id="b"),
        ev("email.replied", "L1", NOW - 10, rep=None, email_id="b"),
        ev("meeting.held", "L1", NOW, meeting_id="g1"),  # before its booking: counted once it is booked
        ev("meeting.booked", "L1", NOW - HOUR, meeting_id="g1", kind="first"),
        ev("meeting.booked", "L1", NOW - HOUR, meeting_id="g2", kind="demo"),
        ev("activity.logged", "L1", NOW - HOUR, kind="LinkedIn message", outbound=None),
        ev("activity.logged", "L1", NOW - HOUR, kind="note", outbound=None),  # not a touch
    ])
    rates = w.rates("rep", "anna")
    assert (rates["contact_rate:call"], rates["contact_rate:email"], rates["contact_rate:meeting"]) == (0.5, 0.5, 0.5)
    fields = w.fields("rep", "anna")
    assert fields["attempts:social"] == 1 and "attempts:other" not in fields and "connected:social" not in fields


@pytest.mark.parametrize(
    ("kind", "outbound", "channel"),
    [("linkedin_message", None, "social"), ("LinkedIn InMail", False, "social"), ("Visit", None, "other"),
     ("sms", True, "other"), ("note", None, None), ("follow-up", False, None)],
)
def test_activity_channels(kind: str, outbound: bool | None, channel: str | None) -> None:
    assert channel_of_activity(kind, outbound, frozenset({"visit"})) == channel


def test_a_won_before_the_contact_is_not_a_later_conversion() -> None:
    lead = {"touches": [[NOW, "call", "anna", "north", True, "c1"]], "won": NOW - DAY}
    fields = batch_recompute(decoded([lead]))[("rep", "anna")]
    assert fields["reached:call"] == 1 and "won:call" not in fields


def test_a_lead_reached_twice_on_a_channel_counts_once_at_its_first_contact() -> None:
    lead = {
        "touches": [[NOW, "call", "ben", "north", True, "c2"], [NOW - DAY, "call", "anna", "north", True, "c1"]],
        "won": NOW + DAY,
    }
    totals = batch_recompute(decoded([lead]))
    assert totals[("rep", "anna")]["reached:call"] == 1 and totals[("rep", "anna")]["won:call"] == 1
    assert "reached:call" not in totals[("rep", "ben")] and totals[("rep", "ben")]["connected:call"] == 1


def test_a_lost_deal_is_not_a_conversion() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - DAY, outcome="connected"),
            ev("lead.deal_closed", "L1", NOW, rep=None, outcome="lost")])
    assert w.fields("rep", "anna")["reached:call"] == 1 and "won:call" not in w.fields("rep", "anna")


# --- follow-up depth --------------------------------------------------------------------------------------------


def test_touches_before_conversion_are_its_depth_and_later_touches_do_not_count() -> None:
    w = Worker()
    w.send([
        ev("call.logged", "L1", NOW - 5 * DAY),
        ev("email.sent", "L1", NOW - 4 * DAY, rep="ben"),
        ev("call.logged", "L1", NOW - 3 * DAY, rep="ben"),
        ev("lead.converted", "L1", NOW - 2 * DAY),
        ev("call.logged", "L1", NOW - DAY),
    ])
    ben = w.fields("rep", "ben")
    assert (ben["leads_converted"], ben["touches_to_convert"]) == (1, 3)
    assert "leads_converted" not in w.fields("rep", "anna")
    assert w.rates("rep", "ben")["avg_touches_to_convert"] == 3


def test_a_lead_goes_quiet_when_its_partitions_event_time_passes_the_quiet_period() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - 10 * DAY), ev("call.logged", "L1", NOW - 9 * DAY)])
    assert "leads_quiet" not in w.fields("rep", "anna")
    # another lead's event moves the partition's clock 3 days past the last touch: L1 is quiet
    w.send([ev("lead.created", "L2", NOW - 6 * DAY, rep=None)])
    anna = w.fields("rep", "anna")
    assert (anna["leads_quiet"], anna["touches_before_quiet"]) == (1, 2)
    # quiet is credited in the window of the last touch
    assert ("rep", "anna") in table_totals(w.table, "day")
    assert table_totals(w.table, "day")[("rep", "anna")]["leads_quiet"] == 1


def test_the_quiet_clock_is_the_partitions_own_and_wall_time_does_not_move_it() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - 10 * DAY)], now=NOW + 30 * DAY)
    w.send([ev("lead.created", "L2", NOW, rep=None)], partition=1)
    assert "leads_quiet" not in w.fields("rep", "anna")


def test_a_future_stamped_event_cannot_fast_forward_the_clock_past_its_arrival() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - DAY)])
    future = ev("call.logged", "L2", NOW + 20 * DAY)
    w.process([(0, 1, orjson.dumps(future), NOW)])  # written to the log at NOW
    assert "leads_quiet" not in w.fields("rep", "anna")
    assert w.family.clock(0) == NOW


def test_a_later_touch_revives_a_quiet_lead_and_a_conversion_replaces_quiet() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - 10 * DAY), ev("lead.created", "L2", NOW - 6 * DAY, rep=None)])
    assert w.fields("rep", "anna")["leads_quiet"] == 1
    w.send([ev("email.sent", "L1", NOW - 5 * DAY, rep="ben")])  # picked up again before the quiet period ran out
    assert "leads_quiet" not in w.fields("rep", "anna") and "leads_quiet" not in w.fields("rep", "ben")
    w.send([ev("lead.created", "L3", NOW - DAY, rep=None)])
    assert w.fields("rep", "ben")["touches_before_quiet"] == 2
    w.send([ev("lead.converted", "L1", NOW)])
    assert "leads_quiet" not in w.fields("rep", "ben")
    assert w.fields("rep", "ben")["touches_to_convert"] == 2


def test_quiet_marks_survive_a_restart_and_pending_ones_fire_after_it() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - 10 * DAY), ev("call.logged", "L2", NOW - 8 * DAY, rep="ben"),
            ev("lead.created", "L3", NOW - 6 * DAY, rep=None)])
    restarted = Worker(RecordingTable(w.table))
    restarted.next_offset = dict(w.next_offset)
    restarted.processor.ensure_loaded(0)
    assert restarted.fields("rep", "anna")["leads_quiet"] == 1 and "leads_quiet" not in restarted.fields("rep", "ben")
    restarted.send([ev("lead.created", "L4", NOW - 4 * DAY, rep=None)])
    assert restarted.fields("rep", "ben")["leads_quiet"] == 1 and restarted.fields("rep", "anna")["leads_quiet"] == 1


def test_the_team_a_rep_acted_for_survives_a_restart_without_a_lead_decoded() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - 2 * HOUR, rep="dora", team="west"),
            ev("call.logged", "L2", NOW - HOUR, rep="dora", team="east")])  # not in the directory: the last one
    restarted = Worker(RecordingTable(w.table))
    restarted.processor.ensure_loaded(0)
    assert restarted.family.group_of(0, "dora") == "east"
    assert restarted.family.leads.loaded(0) == {}  # the quiet deadlines come from the leads' index


def test_state_written_before_the_teams_cell_takes_the_teams_from_the_leads() -> None:
    w = Worker()
    w.send([ev("call.logged", "L1", NOW - HOUR, rep="dora", team="west")])
    table = {key: value for key, value in w.table.items() if key != f"0|engagement|{TEAMS_CELL}"}
    restarted = Worker(RecordingTable(table))
    restarted.processor.ensure_loaded(0)
    assert restarted.family.group_of(0, "dora") == "west"


# --- activity ratios --------------------------------------------------------------------------------------------


def test_source_to_first_meeting_outreach_to_first_meeting_and_first_meeting_to_next_step() -> None:
    w = Worker()
    w.send([
        ev("lead.created", "L1", NOW - 3 * DAY, source="referral", rep=None),
        ev("call.logged", "L1", NOW - 3 * DAY + HOUR),
        ev("meeting.booked", "L1", NOW - 2 * DAY, kind="first", meeting_id="f1"),
        ev("meeting.booked", "L1", NOW - DAY, kind="demo", meeting_id="d1"),
        ev("lead.created", "L2", NOW - 3 * DAY, source="referral", rep=None),
        ev("email.sent", "L2", NOW - 2 * DAY),
        ev("meeting.booked", "L2", NOW - DAY, meeting_id="f2"),  # no kind: a first meeting
        ev("lead.created", "L3", NOW - 3 * DAY, source="google_ads", rep=None),
        ev("call.logged", "L3", NOW - 2 * DAY, rep="ben"),
        ev("lead.created", "L4", NOW - 3 * DAY, source="referral", rep=None),
        ev("meeting.booked", "L4", NOW - 2 * DAY, kind="first", meeting_id="f4", rep="ben"),
        ev("lead.converted", "L4", NOW - DAY),
    ])
    referral = w.rates("source", "referral")
    assert referral["first_meeting_rate"] == 1.0 and w.rates("source", "google_ads")["first_meeting_rate"] == 0.0
    anna, ben = w.rates("rep", "anna"), w.rates("rep", "ben")
    assert anna["outreach_meeting_rate"] == 1.0 and anna["next_step_rate"] == 0.5
    assert w.fields("rep", "ben")["outreach_leads"] == 2 and ben["outreach_meeting_rate"] == 0.5
    assert ben["next_step_rate"] == 1.0  # L4's first meeting led to a conversion


def test_a_meeting_booked_before_the_first_outreach_is_not_outreach_to_meeting() -> None:
    lead = {
        "meetings": {"f": {"at": NOW - DAY, "rep": "anna", "team": "north", "kind": "demo"}},
        "touches": [[NOW, "call", "anna", "north", False, "c"]],
    }
    # a demo is not a first meeting; the first outreach is the demo booking itself
    fields = batch_recompute(decoded([lead]))[("rep", "anna")]
    assert fields["outreach_leads"] == 1 and "outreach_first_meeting" not in fields and "first_meetings" not in fields


# --- partials: team beside the rep, targets ---------------------------------------------------------------------


def test_rep_partials_carry_their_team_key_and_team_fields_and_targets_on_calendar_windows() -> None:
    targets = {"day": {"emails_personalized": 3, "call": 40}, "month": {"emails_personalized": 50}}
    w = Worker(targets=lambda rep, grain: targets.get(grain, {}) if rep == "anna" else {})
    w.send([ev("email.sent", "L1", NOW - HOUR, personalized=True), ev("call.logged", "L2", NOW - HOUR, rep="cleo")])
    partials = {(p.record["scope"], p.record["id"], p.record["window"]): p for p in w.family.render({0}, NOW)}
    day = partials[("rep", "anna", "day:2026-11-22")]
    assert day.group_key == "salespulse:engagement:team:north:day:2026-11-22"
    assert day.fields["target:emails_personalized"] == 3 and "target:call" not in day.fields
    assert day.record["targets"] == {"emails_personalized": 3}
    assert day.record["team"] == "north" and day.record["team_counts"]["emails_sent"] == 1
    assert "target:emails_personalized" not in day.record["counts"]
    assert partials[("rep", "anna", "month:2026-11")].fields["target:emails_personalized"] == 50
    assert ("rep", "anna", "rolling:24h") not in partials  # engagement keeps one rolling window
    rolling = partials[("rep", "anna", "rolling:7d")]
    assert rolling.group_key.endswith(":team:north:rolling:7d") and rolling.record["team_counts"]["emails_sent"] == 1
    assert not any(k.startswith("target:") for k in rolling.fields)
    assert partials[("team", "north", "day:2026-11-22")].group_key is None
    assert partials[("rep", "cleo", "all")].record["team"] == "south"


def test_activity_partials_carry_targets_of_their_own_kinds_only() -> None:
    table: dict[str, bytes] = {}
    targets = {"day": {"call": 40, "emails_personalized": 3}, "week": {"call": 200}}
    family = ActivityFamily(
        CellStore(table, "activity"), UTC, 35 * DAY, team_of_rep=TEAMS,
        targets=lambda rep, grain: targets.get(grain, {}), foreign_target_kinds=ADDITIVE_FIELDS,
    )
    BatchProcessor(DedupIndex(table, HOUR), [family], lambda r, why: None).process(
        records(0, [ev("call.logged", "L1", NOW - HOUR)]), NOW
    )
    partials = {(p.record["scope"], p.record["id"], p.record["window"]): p for p in family.render({0}, NOW)}
    day = partials[("rep", "anna", "day:2026-11-22")]
    assert day.fields == {"call:no_answer": 1, "call": 1, "total": 1, "target:call": 40}
    assert day.record["targets"] == {"call": 40} and day.record["counts"] == {"call:no_answer": 1, "call": 1, "total": 1}
    assert partials[("rep", "anna", "week:2026-W47")].fields["target:call"] == 200
    assert "target:call" not in partials[("rep", "anna", "all")].fields
    assert "target:call" not in partials[("team", "north", "day:2026-11-22")].fields
    assert day.group_key is None  # the activity family publishes no rates


# --- streaming = batch recomputation ----------------------------------------------------------------------------

REPS = ["anna", "ben", "cleo", None]
PARTITIONS = 3


@st.composite
def lead_history(draw: st.DrawFn, number: int) -> list[dict[str, Any]]:
    """One lead's events, in any order (everything of a lead is in its key's log, in any event-time order)."""
    lead = f"L{number}"
    base = NOW - draw(st.integers(0, 12 * 24)) * HOUR
    emails = [f"{lead}-m{i}" for i in range(draw(st.integers(0, 2)))]
    meetings = [f"{lead}-g{i}" for i in range(draw(st.integers(0, 2)))]
    events = []

    def when() -> float:
        return base + draw(st.integers(-2 * 24, 6 * 24)) * HOUR + draw(st.integers(0, 59)) * MINUTE

    if draw(st.booleans()):
        events.append(ev("lead.created", lead, when(), rep=None, source=draw(st.sampled_from(["ads", "web"]))))
    for email_id in emails:
        if draw(st.integers(0, 4)):
            events.append(ev("email.sent", lead, when(), rep=draw(st.sampled_from(REPS[:3])), email_id=email_id,
                             personalized=draw(st.sampled_from([True, False, None]))))
        for kind in draw(st.lists(st.sampled_from(["opened", "opened", "clicked", "replied", "bounced"]), max_size=4)):
            events.append(ev(f"email.{kind}", lead, when(), rep=draw(st.sampled_from(REPS)), email_id=email_id))
    for meeting_id in meetings:
        if draw(st.integers(0, 4)):
            events.append(ev("meeting.booked", lead, when(), rep=draw(st.sampled_from(REPS[:3])), meeting_id=meeting_id,
                             kind=draw(st.sampled_from(["first", "demo", "follow_up", None]))))
        if draw(st.booleans()):
            events.append(ev("meeting.held", lead, when(), rep=draw(st.sampled_from(REPS[:3])), meeting_id=meeting_id))
    for _ in range(draw(st.integers(0, 3))):
        events.append(ev("call.logged", lead, when(), rep=draw(st.sampled_from(REPS[:3])),
                         outcome=draw(st.sampled_from(["connected", "no_answer", "busy"]))))
    if draw(st.integers(0, 3)) == 0:
        events.append(ev("activity.logged", lead, when(), rep=draw(st.sampled_from(REPS[:3])),
                         kind=draw(st.sampled_from(["linkedin_message", "visit", "note"])), outbound=None))
    for _ in range(draw(st.integers(0, 2))):
        events.append(ev("lead.converted", lead, when()))
    for _ in range(draw(st.integers(0, 2))):
        events.append(ev("lead.deal_closed", lead, when(), rep=None, outcome=draw(st.sampled_from(["won", "lost"]))))
    order = draw(st.permutations(events))
    history = list(order)
    for _ in range(draw(st.integers(0, 2))):  # redeliveries: the same event again later in the key's log
        if history:
            again = draw(st.sampled_from(history))
            history.insert(draw(st.integers(history.index(again) + 1, len(history))), again)
    return history


def parse(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def reference_states(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Final lead states from the distinct events, written without the stream code."""
    distinct: dict[str, dict[str, Any]] = {}
    for event in events:
        distinct.setdefault(event["event_id"], event)
    clock: dict[int, float] = {}
    by_lead: dict[str, list[dict[str, Any]]] = {}
    for event in distinct.values():
        p = partition_of(event)
        clock[p] = max(clock.get(p, float("-inf")), parse(event["occurred_at"]))
        by_lead.setdefault(event["lead_id"], []).append(event)
    states = []
    for lead_id, history in by_lead.items():
        state: dict[str, Any] = {"emails": {}, "meetings": {}, "touches": []}
        first = {}  # earliest of each kind
        for e in sorted(history, key=lambda e: parse(e["occurred_at"])):
            at, rep = parse(e["occurred_at"]), e.get("rep_id") or "unassigned"
            team = TEAMS.get(rep, "unassigned")
            kind = e["type"]
            if kind == "lead.created":
                first.setdefault("created", (at, e.get("source")))
            elif kind == "lead.converted":
                first.setdefault("converted", at)
            elif kind == "lead.deal_closed" and e["outcome"] == "won":
                first.setdefault("won", at)
            elif kind == "call.logged":
                state["touches"].append([at, "call", rep, team, e["outcome"] == "connected", e["event_id"]])
            elif kind == "activity.logged" and e["kind"] != "note":
                channel = "social" if e["kind"].startswith("linkedin") else "other"
                state["touches"].append([at, channel, rep, team, False, e["event_id"]])
            elif kind == "email.sent":
                email = state["emails"].setdefault(e["email_id"], {})
                if "at" not in email:
                    email.update(at=at, rep=rep, team=team, personalized=bool(e.get("personalized")))
            elif kind.startswith("email."):
                state["emails"].setdefault(e["email_id"], {})[kind.split(".")[1]] = True
            elif kind == "meeting.booked":
                meeting = state["meetings"].setdefault(e["meeting_id"], {})
                if "at" not in meeting:
                    meeting.update(at=at, rep=rep, team=team, kind=e.get("kind"))
            elif kind == "meeting.held":
                state["meetings"].setdefault(e["meeting_id"], {})["held"] = True
        if "created" in first:
            state["created"], state["source"] = first["created"]
        state["converted"] = first.get("converted")
        state["won"] = first.get("won")
        touch_times = [t[0] for t in state["touches"]]
        touch_times += [m["at"] for m in (*state["emails"].values(), *state["meetings"].values()) if "at" in m]
        p = int(lead_id[1:]) % PARTITIONS
        state["quiet"] = bool(touch_times) and state["converted"] is None and clock[p] >= max(touch_times) + QUIET_S
        states.append(state)
    return states


def partition_of(event: dict[str, Any]) -> int:
    return int(event["lead_id"][1:]) % PARTITIONS


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Record], random.Random]:
    histories = [draw(lead_history(n)) for n in range(draw(st.integers(1, 6)))]
    rnd = draw(st.randoms(use_true_random=False))
    order: list[dict[str, Any]] = []
    cursors = [0] * len(histories)
    while any(c < len(h) for c, h in zip(cursors, histories)):  # any interleaving across keys
        n = rnd.choice([i for i, h in enumerate(histories) if cursors[i] < len(h)])
        order.append(histories[n][cursors[n]])
        cursors[n] += 1
    next_offset = {p: draw(st.integers(0, 50)) for p in range(PARTITIONS)}
    stream = []
    for event in order:
        p = partition_of(event)
        stream.append((p, next_offset[p], orjson.dumps(event)))
        next_offset[p] += 1
    return order, stream, rnd


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(runs())
def test_any_order_split_redelivery_and_crash_gives_the_batch_recomputation(
    run: tuple[list[dict[str, Any]], list[Record], random.Random],
) -> None:
    events, stream, rnd = run
    decoded_limit = rnd.choice([None, 1])  # 1: leads go back to their entries after each persist
    worker = Worker(decoded_limit=decoded_limit)
    committed, crashes = 0, 0
    now = NOW + 7 * DAY
    while committed < len(stream):
        now += rnd.choice([0, 1, 61, 900])  # the wall clock moves on (expiry passes)
        batch = stream[committed : committed + rnd.randint(1, 8)]
        if crashes < 3 and rnd.random() < 0.3:
            table = worker.table
            assert isinstance(table, RecordingTable)
            landed = crash_mid_write(table, lambda: worker.process(batch, now), rnd)
            worker = Worker(landed, decoded_limit=decoded_limit)  # restart from the last commit
            crashes += 1
            continue
        worker.process(batch, now)
        committed += len(batch)
    for p in range(PARTITIONS):
        worker.processor.ensure_loaded(p)
    expected = normalise(batch_recompute(decoded(reference_states(events))))
    assert table_totals(worker.table) == expected
    # every event is within retention: the day cells hold the same sums as all time
    assert table_totals(worker.table, "day") == {k: v for k, v in expected.items() if k[0] != "rep_team"}
    engaged = {
        (pair.split("\t")[0], pair.split("\t")[1], field.removeprefix("emails_")): value
        for (scope, pair), fields in expected.items() if scope == "rep_team" for field, value in fields.items()
    }
    assert worker.family.email_event_totals(range(PARTITIONS)) == engaged


def test_contribution_of_a_lead_without_events_is_empty() -> None:
    assert contribution(Lead()) == {}


def test_team_fields_beside_a_rep_come_from_the_cells_when_the_team_is_not_rendered_with_it() -> None:
    w = Worker()
    w.send([ev("email.sent", "L1", NOW - HOUR), ev("email.sent", "L2", NOW - HOUR, rep="ben")])
    w.family.render({0}, NOW)
    w.family.dirty.add((0, "day", "2026-11-22", "rep", "anna"))  # the rep alone, e.g. after a budgeted flush
    (only,) = w.family.render({0}, NOW)
    assert only.record["team"] == "north" and only.record["team_counts"]["emails_sent"] == 2


def test_a_replay_sees_the_clock_as_of_its_offset_not_as_a_crashed_batch_left_it() -> None:
    """Regression (a hash-seed dependent failure of the crash property): the clock cell reached the
    changelog from a crashed batch whose last event moved the clock 3 days on, while the day cell had
    landed only from an earlier crash. Replaying the first call against the later clock marked the
    lead quiet at that offset (skipped by the day cell), and the later call revived it (applied):
    ``leads_quiet -1`` in the day cell. The replay must see the clock as of each replayed offset."""
    day = "0|engagement|day|2026-11-22"
    events = [
        ev("call.logged", "L0", NOW - HOUR, outcome="connected"),
        ev("meeting.held", "L0", NOW - HOUR, meeting_id="g0"),
        ev("call.logged", "L0", NOW - HOUR + QUIET_S, outcome="connected"),
    ]
    stream = records(0, events)
    worker = Worker()
    table = worker.table
    assert isinstance(table, RecordingTable)
    before = dict(table)
    table.log.clear()
    worker.process(stream[:1])
    landed = before | {key: value for key, value in table.log if key == day or "dedup" in key}
    worker = Worker(RecordingTable(landed))  # crash: only the day cell (and the ids) landed
    table = worker.table
    before = dict(table)
    table.log.clear()
    worker.process(stream)
    landed = before | {key: value for key, value in table.log if key != day and "outreach" not in key}
    worker = Worker(RecordingTable(landed))  # crash: the clock (3 days on) landed, the day cell not
    for record in stream:
        worker.process([record])
    totals = table_totals(worker.table, "day")
    assert totals[("rep", "anna")] == {"attempts:call": 2, "connected:call": 2, "reached:call": 1, "outreach_leads": 1}
    assert table_totals(worker.table) == normalise(batch_recompute(decoded(reference_states(events))))


def test_a_touch_redelivered_after_the_dedup_horizon_is_not_counted_again() -> None:
    w = Worker()
    call = ev("call.logged", "L1", NOW - HOUR, eid="call-1", outcome="connected")
    w.send([call], now=NOW)
    w.send([ev("call.logged", "L2", NOW - HOUR)], now=NOW + 4 * DAY)  # its write expires ids older than 72 h
    assert w.send([call], now=NOW + 4 * DAY + 1).duplicates == 0, "the dedup index forgot call-1"
    assert w.fields("rep", "anna")["attempts:call"] == 2
