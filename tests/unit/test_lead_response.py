"""Lead response (METRICS.md section 1): first touch, response time, SLA, coverage, alerts and gauges.

Pure: the arithmetic of ``salespulse.metrics.lead_response`` and the stream family
``LeadResponseFamily`` driven through a ``BatchProcessor`` over a plain dict table (standing for the
changelogged Faust table), with an explicit ``now``. A crash is modelled by a new worker over (a
copy of) the dict that re-processes records from the last committed position.
"""

from __future__ import annotations

from functools import partial
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salespulse.config import Config
from salespulse.families.business_hours import add_business_seconds, business_seconds_between
from salespulse.families.lead_response.rules import (
    UNASSIGNED,
    batch_recompute,
    bucket_field,
    contribution,
    contribution_change,
    quantile,
)
from salespulse.families.lead_response.spec import ADDITIVE_FIELDS, derived_fields
from salespulse.families.windows import hour_bucket, rolling_hour_range
from salespulse.families.outbound import is_outbound
from salespulse.models.events import EventAdapter
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.lead_response.family import LIVE_GRACE_S, LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC, Lead
from salespulse.engine.processor import BatchProcessor, Record
from salespulse.engine.record_log import RecordLog
from tests.unit.log_support import RecordingTable, crash_mid_write, records

#: How a family can keep its lead states (table prefix, store): one record per batch as the worker
#: does, or one table row per lead (a ``CellStore``); both must behave the same.
LEAD_STORES: dict[str, tuple[str, Any]] = {
    "record_log": ("leads", RecordLog),
    # states go back to their encoded entries after every persist, and are decoded again when read
    "record_log_one_decoded": ("leads", partial(RecordLog, decoded_limit=1)),
    "cells": ("lead", CellStore),
}
DEFAULT_STORE = "record_log"
LEAD_PREFIXES = {prefix for prefix, _ in LEAD_STORES.values()}

UTC = ZoneInfo("UTC")
OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
SLA = 300.0
SCOPES = ("rep", "team", "source", "team_source", "team_rep")

_ids = itertools.count()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


# --- events -----------------------------------------------------------------------------------------------------


def created(lead_id: str, at: float, rep: str | None = "anna", team: str | None = "north", source: str = "ads",
            eid: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": eid or f"created-{lead_id}-{next(_ids)}", "type": "lead.created",
                             "occurred_at": iso(at), "lead_id": lead_id, "source": source}
    if rep is not None:
        event["rep_id"] = rep
    if team is not None:
        event["team"] = team
    return event


def assigned(lead_id: str, at: float, rep: str, team: str | None = None, eid: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": eid or f"assigned-{lead_id}-{next(_ids)}", "type": "lead.assigned",
                             "occurred_at": iso(at), "lead_id": lead_id, "rep_id": rep}
    if team is not None:
        event["team"] = team
    return event


def touch(lead_id: str, at: float, rep: str = "anna", kind: str = "call.logged", eid: str | None = None,
          **fields: Any) -> dict[str, Any]:
    """An event of ``kind`` about a lead (a touch or not); required fields filled in."""
    n = next(_ids)
    event: dict[str, Any] = {"event_id": eid or f"{kind}-{lead_id}-{n}", "type": kind, "occurred_at": iso(at),
                             "lead_id": lead_id}
    if kind == "call.logged":
        event |= {"rep_id": rep, "outcome": "no_answer"}
    elif kind == "email.sent":
        event |= {"rep_id": rep, "email_id": f"m{n}"}
    elif kind in ("meeting.booked", "meeting.held"):
        event |= {"rep_id": rep, "meeting_id": f"g{n}"}
    elif kind == "activity.logged":
        event |= {"rep_id": rep, "kind": "note"}
    elif kind.startswith("email."):
        event |= {"email_id": f"m{n}"}
    return event | fields


# --- a worker over a dict table ---------------------------------------------------------------------------------


class Worker:
    """Dedup + lead-response family + processor over a table, as ``WorkerRuntime`` builds them."""

    def __init__(
        self,
        table: dict[str, bytes] | None = None,
        sla_s: float = SLA,
        deadline_of: Callable[[float, str], float] | None = None,
        business_seconds: Callable[[float, float, str], float] | None = None,
        outbound_kinds: Iterable[str] = ("Visit ",),
        retention_s: float = 35 * DAY,
        store: str = DEFAULT_STORE,
    ) -> None:
        self.table: dict[str, bytes] = RecordingTable() if table is None else table
        self.dead: list[tuple[Record, str]] = []
        prefix, store_class = LEAD_STORES[store]
        self.family = LeadResponseFamily(
            CellStore(self.table, "response"),
            store_class(self.table, prefix, LEAD_CODEC),
            UTC,
            retention_s,
            sla_s=sla_s,
            deadline_of=deadline_of,
            business_seconds=business_seconds,
            outbound_kinds=outbound_kinds,
        )
        self.dedup = DedupIndex(self.table, 72 * HOUR)
        self.processor = BatchProcessor(self.dedup, [self.family], lambda r, why: self.dead.append((r, why)))
        self.next_offset: dict[int, int] = {}

    def process(self, batch: Sequence[Record], now: float = NOW) -> Any:
        stats = self.processor.process(batch, now)
        assert not self.dead, self.dead
        for partition, offset, *_ in batch:
            self.next_offset[partition] = max(self.next_offset.get(partition, 0), offset + 1)
        return stats

    def send(self, events: Sequence[dict[str, Any]], now: float = NOW, partition: int = 0) -> Any:
        """Append events to a partition's log and process them as one batch."""
        return self.process(records(partition, events, self.next_offset.get(partition, 0)), now)

    @property
    def owned(self) -> set[int]:
        return set(self.processor.loaded)

    def fields(self, scope: str, ident: str) -> dict[str, float]:
        """All-time fields of one id, summed over partitions, zeros left out."""
        return nonzero(self.family.all_time(self.owned, scope).get(ident, {}))

    def lead(self, lead_id: str, partition: int = 0) -> dict[str, Any]:
        """A lead's durable state (as a reloading worker would find it), as the JSON the changelog holds."""
        return LEAD_CODEC.encode(table_leads(self.table)[(partition, lead_id)])

    def mark_published(self, partition: int, lead_id: str, status: str) -> None:
        self.family.mark_published([(partition, lead_id, status)])

    def alerts(self, now: float) -> list[dict[str, Any]]:
        self.family.due_alerts(self.owned, now)
        return [alert for _, _, alert in self.family.pending_alerts(self.owned)]


def nonzero(fields: Mapping[str, float]) -> dict[str, float]:
    return {name: value for name, value in fields.items() if value}


def normalise(totals: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for key, fields in totals.items():
        kept = nonzero(fields)
        if kept:
            out[key] = kept
    return out


def table_totals(table: Mapping[str, bytes]) -> dict[tuple[str, str], dict[str, float]]:
    """All-time fields per (scope, id) from the durable ``response`` cells, summed over partitions."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for key, raw in table.items():
        _partition, prefix, name = key.split("|", 2)
        if prefix != "response" or name != "all|-":
            continue
        cell = orjson.loads(raw)
        for scope in SCOPES:
            for ident, fields in cell.get(scope, {}).items():
                into = totals.setdefault((scope, ident), {})
                for field, value in fields.items():
                    into[field] = into.get(field, 0) + value
    return normalise(totals)


def table_leads(table: Mapping[str, bytes]) -> dict[tuple[int, str], Lead]:
    """(partition, lead id) -> lead state, loaded from (a copy of) the table as a new worker would."""
    copy = dict(table)
    out = {}
    for prefix, store_class in LEAD_STORES.values():
        partitions = {int(key.split("|", 1)[0]) for key in copy if key.split("|")[1] == prefix}
        store = store_class(copy, prefix, LEAD_CODEC)
        for partition in partitions:
            store.load_partition(partition)
            for lead_id, lead in store.items(partition):
                out[(partition, lead_id)] = lead
    return out


def without_wm(leads: Mapping[tuple[int, str], Lead]) -> dict[tuple[int, str], dict[str, Any]]:
    """Lead states (as JSON) without their watermark (which depends on where batches ended)."""
    return {key: {k: v for k, v in LEAD_CODEC.encode(lead).items() if k != "wm"} for key, lead in leads.items()}


def recomputed(table: Mapping[str, bytes]) -> dict[tuple[str, str], dict[str, float]]:
    """``batch_recompute`` over the final lead states in the table."""
    return normalise(batch_recompute(list(table_leads(table).values())))


def state(created_at: float | None, touch_at: float | None = None, rep: str = "anna", team: str = "north",
          source: str = "ads", sla: float = SLA) -> Lead:
    """A lead state as the family keeps it (around-the-clock SLA)."""
    lead = Lead(created=created_at, touch=touch_at, owner=rep, team=team, source=source)
    if created_at is not None:
        lead.deadline = created_at + sla
    if touch_at is not None:
        lead.touch_owner = rep
        if created_at is not None:
            lead.response_s = max(0.0, touch_at - created_at)
    return lead


# --- the seed examples ------------------------------------------------------------------------------------------


def test_seed_1000_leads_200_emailed_is_20_percent_contact_coverage_pure() -> None:
    leads = [state(NOW, NOW + 60 if i < 200 else None) for i in range(1000)]
    team = batch_recompute(leads)[("team", "north")]
    assert team["created"] == 1000 and team["touched"] == 200
    assert derived_fields(team)["contact_coverage"] == pytest.approx(0.2)
    assert derived_fields(team)["within_sla_rate"] == pytest.approx(0.2)


def test_seed_1000_leads_200_emailed_is_20_percent_contact_coverage_in_the_stream() -> None:
    w = Worker()
    t0 = NOW - 2 * HOUR
    events = [created(f"L{i}", t0, source="marketing") for i in range(1000)]
    events += [touch(f"L{i}", t0 + 3 * MINUTE, kind="email.sent") for i in range(200)]
    for start in range(0, len(events), 300):
        w.send(events[start:start + 300])
    source = w.fields("source", "marketing")
    assert (source["created"], source["touched"]) == (1000, 200)
    assert derived_fields(source)["contact_coverage"] == pytest.approx(0.2)
    assert table_totals(w.table) == recomputed(w.table)


def test_five_minute_rule_299_s_is_within_sla_301_s_is_late_300_s_is_on_time() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([created("L299", t0), created("L300", t0), created("L301", t0)])
    w.send([touch("L299", t0 + 299), touch("L300", t0 + 300), touch("L301", t0 + 301)])
    team = w.fields("team", "north")
    assert team == {
        "created": 3, "touched": 3, "within_sla": 2, "late": 1, "response_sum_s": 900, "le_300": 2, "le_600": 1,
    }
    derived = derived_fields(team)
    assert derived["within_sla_rate"] == pytest.approx(2 / 3)
    assert derived["avg_response_s"] == pytest.approx(300)
    assert [w.lead(lead)["response_s"] for lead in ("L299", "L300", "L301")] == [299, 300, 301]


@pytest.mark.parametrize(
    ("response_s", "field"),
    [(0, "le_15"), (15, "le_15"), (15.001, "le_30"), (180, "le_180"), (180.5, "le_300"), (299, "le_300"),
     (300, "le_300"), (300.001, "le_600"), (301, "le_600"), (604800, "le_604800"), (604800.5, "le_inf"), (1e9, "le_inf")],
)
def test_response_bucket_le_300_holds_180_exclusive_to_300_inclusive(response_s: float, field: str) -> None:
    assert bucket_field(response_s) == field


def test_contribution_of_a_touched_lead_credits_rep_team_source_and_their_pairs() -> None:
    lead = state(1000.0, 1299.0, rep="anna", team="north", source="ads")
    fields = {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 299.0, "le_300": 1}
    assert contribution(lead) == {
        (scope, ident, field): value
        for scope, ident in (("rep", "anna"), ("team", "north"), ("source", "ads"), ("team_source", "north\tads"),
                             ("team_rep", "north\tanna"))
        for field, value in fields.items()
    }
    assert contribution(state(None, 1299.0)) == {}, "no creation known yet: nothing counts"
    late = contribution(state(1000.0, 1301.0))
    assert late[("rep", "anna", "late")] == 1 and ("rep", "anna", "within_sla") not in late
    untouched = contribution(Lead(created=1000.0, deadline=1300.0))
    assert untouched == {(scope, ident, "created"): 1 for scope, ident in (
        ("rep", UNASSIGNED), ("team", UNASSIGNED), ("source", "unknown"), ("team_source", f"{UNASSIGNED}\tunknown"),
        ("team_rep", f"{UNASSIGNED}\t{UNASSIGNED}"))}


def flat(deltas: Iterable[tuple[Any, ...]]) -> list[tuple[str, str, str, float]]:
    """Deltas as (scope, id, field, change), whether given one field each or grouped per (scope, id)."""
    out = []
    for delta in deltas:
        if len(delta) == 3:
            scope, ident, changes = delta
            out += [(scope, ident, field, change) for field, change in changes.items()]
        else:
            out.append(delta)
    return sorted(out)


def test_contribution_change_is_new_minus_old_without_the_unchanged() -> None:
    old = {("rep", "a", "created"): 1, ("rep", "a", "late"): 1, ("team", "n", "created"): 1}
    new = {("rep", "a", "created"): 1, ("rep", "a", "within_sla"): 1, ("team", "n", "created"): 1}
    assert flat(contribution_change(old, new)) == [("rep", "a", "late", -1), ("rep", "a", "within_sla", 1)]
    assert flat(contribution_change(old, old)) == []
    assert flat(contribution_change({}, old)) == sorted((*key, value) for key, value in old.items())
    assert flat(contribution_change(old, {})) == sorted((*key, -value) for key, value in old.items())


def test_quantiles_interpolate_inside_the_bucket_and_report_the_last_bound_beyond_it() -> None:
    assert quantile({"le_300": 1}, 0.5) == pytest.approx(240)  # (180, 300], halfway
    assert quantile({"le_15": 1, "le_600": 1}, 0.5) == pytest.approx(15)
    assert quantile({"le_15": 1, "le_600": 1}, 0.99) == pytest.approx(300 + 300 * 0.98)
    assert quantile({"le_inf": 3}, 0.9) == 604800
    assert quantile({"created": 4}, 0.5) is None
    assert derived_fields({"created": 2}) == {"within_sla_rate": 0, "contact_coverage": 0}
    assert derived_fields({}) == {}


# --- what a first touch is --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (touch("L", NOW, kind="call.logged"), True),
        (touch("L", NOW, kind="email.sent"), True),
        (touch("L", NOW, kind="meeting.booked"), True),
        (touch("L", NOW, kind="activity.logged", outbound=True), True),
        (touch("L", NOW, kind="activity.logged") | {"kind": "Visit"}, True),  # a configured kind
        (touch("L", NOW, kind="activity.logged"), False),  # kind "note", not outbound
        (touch("L", NOW, kind="activity.logged", outbound=False), False),
        (touch("L", NOW, kind="email.opened"), False),
        (touch("L", NOW, kind="email.replied"), False),
        (touch("L", NOW, kind="email.clicked"), False),
        (touch("L", NOW, kind="meeting.held"), False),
        (created("L", NOW), False),
        (assigned("L", NOW, "ben"), False),
    ],
    ids=lambda value: value["type"] + ("/" + value["kind"] if "kind" in value else "") if isinstance(value, dict) else "",
)
def test_is_touch_only_for_outbound_touches(event: dict[str, Any], expected: bool) -> None:
    assert is_outbound(EventAdapter.validate_python(event), frozenset({"visit"})) is expected


def test_first_touch_is_the_earliest_outbound_touch_and_opens_and_replies_are_not_touches() -> None:
    w = Worker(outbound_kinds=["Visit "])
    t0 = NOW - HOUR
    w.send([
        created("L1", t0),
        touch("L1", t0 + 10, kind="email.opened"),
        touch("L1", t0 + 20, kind="email.replied"),
        touch("L1", t0 + 30, kind="meeting.held", rep="ben"),
        touch("L1", t0 + 40, kind="activity.logged", rep="ben"),  # a note, not outbound
    ])
    assert w.fields("team", "north") == {"created": 1}
    assert w.lead("L1").get("touch") is None
    w.send([
        touch("L1", t0 + 900, kind="meeting.booked"),
        touch("L1", t0 + 500, kind="call.logged"),
        touch("L1", t0 + 700, kind="email.sent"),
    ])
    assert w.lead("L1")["touch"] == t0 + 500
    w.send([touch("L1", t0 + 400, kind="activity.logged", rep="ben") | {"kind": "visit"}])  # configured kind
    assert w.lead("L1")["touch"] == t0 + 400
    w.send([touch("L1", t0 + 350, kind="activity.logged", outbound=True)])
    assert w.lead("L1")["response_s"] == 350
    assert w.fields("team", "north") == {"created": 1, "touched": 1, "late": 1, "response_sum_s": 350, "le_600": 1}


def test_response_is_floored_at_zero_for_a_touch_stamped_before_creation() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([created("L1", t0), touch("L1", t0 - 30)])
    assert w.lead("L1")["response_s"] == 0
    assert w.fields("rep", "anna") == {"created": 1, "touched": 1, "within_sla": 1, "le_15": 1}


# --- out of order -----------------------------------------------------------------------------------------------


def test_touch_in_the_log_before_its_lead_gives_the_right_response_once_both_are_in() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([touch("L1", t0 + 120, rep="ben")])
    assert table_totals(w.table) == {}, "a touch without its lead counts nowhere yet"
    w.send([created("L1", t0, rep="anna")])
    assert w.lead("L1")["response_s"] == 120
    assert w.fields("rep", "anna") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 120, "le_120": 1}
    assert w.fields("rep", "ben") == {}, "credited to the owner at the touch, not the toucher"
    assert w.family.awaiting_by_team(w.owned, NOW) == {}
    assert table_totals(w.table) == recomputed(w.table)


def test_earlier_touch_arriving_late_replaces_the_first_touch_and_moves_the_aggregates() -> None:
    w = Worker()
    t0 = NOW - 2 * HOUR
    w.send([created("L1", t0), touch("L1", t0 + 400)])
    assert w.fields("team", "north") == {"created": 1, "touched": 1, "late": 1, "response_sum_s": 400, "le_600": 1}
    w.send([touch("L1", t0 + 200, kind="email.sent")])
    expected = {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 200, "le_300": 1}
    assert w.fields("team", "north") == expected
    for name in (f"hour|{hour_bucket(t0)}", "day|2026-11-22", "week|2026-W47", "month|2026-11"):
        cell = w.family.cells.get(0, name)
        assert cell is not None and nonzero(cell["team"]["north"]) == expected, name
    w.send([touch("L1", t0 + 250)])  # a later touch changes nothing
    assert w.fields("team", "north") == expected
    assert table_totals(w.table) == recomputed(w.table)


def test_reassignment_moves_the_responsibility_not_the_clock() -> None:
    w = Worker()
    t0 = NOW - 10 * MINUTE
    w.send([created("L1", t0, rep="anna")], now=t0 + 5)
    w.send([assigned("L1", t0 + 100, "ben", team="south")], now=t0 + 100)
    lead = w.lead("L1")
    assert lead["deadline"] == t0 + SLA
    assert w.fields("rep", "ben") == {"created": 1} and w.fields("rep", "anna") == {}
    assert w.fields("team", "south") == {"created": 1} and w.fields("team", "north") == {}
    assert w.alerts(t0 + SLA - 1) == []
    [alert] = w.alerts(t0 + SLA)
    assert (alert["rep_id"], alert["team"], alert["deadline"]) == ("ben", "south", iso(t0 + SLA))
    w.send([touch("L1", t0 + 400, rep="cleo")], now=t0 + 400)
    assert w.fields("rep", "ben") == {"created": 1, "touched": 1, "late": 1, "response_sum_s": 400, "le_600": 1}
    assert w.fields("rep", "cleo") == {}
    assert table_totals(w.table) == recomputed(w.table)


def test_the_owner_at_first_touch_is_taken_from_the_assignment_history_in_event_time() -> None:
    w = Worker()
    t0 = NOW - HOUR
    # in the log: the reassignment to cleo (t0+300) before the one to ben (t0+100), then the touch at t0+200
    w.send([created("L1", t0, rep="anna"), assigned("L1", t0 + 300, "cleo"), assigned("L1", t0 + 100, "ben"),
            touch("L1", t0 + 200, rep="dev")])
    lead = w.lead("L1")
    assert (lead["owner"], lead["touch_owner"]) == ("cleo", "ben")
    assert w.fields("rep", "ben") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 200, "le_300": 1}
    assert w.fields("rep", "cleo") == {} and w.fields("rep", "anna") == {} and w.fields("rep", "dev") == {}


def test_an_assignment_arriving_late_moves_the_credit_of_an_earlier_touch() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([created("L1", t0, rep="anna"), touch("L1", t0 + 200, rep="anna")])
    assert w.fields("rep", "anna")["touched"] == 1
    w.send([assigned("L1", t0 + 100, "ben")])  # happened before the touch, arrived after it
    assert w.fields("rep", "ben") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 200, "le_300": 1}
    assert w.fields("rep", "anna") == {}
    w.send([assigned("L1", t0 + 250, "cleo")])  # after the touch: the current owner changes, not the credit
    assert w.lead("L1")["owner"] == "cleo"
    assert w.fields("rep", "ben")["touched"] == 1 and w.fields("rep", "cleo") == {}
    assert w.fields("team", "north") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 200, "le_300": 1}
    assert table_totals(w.table) == recomputed(w.table)


def test_an_assignment_processed_before_its_lead_survives_the_retention_sweep() -> None:
    # Kafka keeps the key's order, the CRM need not: lead.assigned may be in the log before lead.created.
    # The state then holds only the assignment; the expiry pass (each partition's first batch, then
    # every minute) must not take it for a state older than retention.
    w = Worker()
    t0 = NOW - HOUR
    w.send([assigned("L1", t0 + 60, "ben")], now=NOW)
    w.send([created("L1", t0, rep="anna"), touch("L1", t0 + 120, rep="cleo")], now=NOW + 120)
    assert w.lead("L1")["owner"] == "ben"
    assert w.fields("rep", "ben") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 120, "le_120": 1}
    assert w.fields("rep", "anna") == {}


def test_an_earlier_lead_created_moves_the_leads_window_and_its_deadline() -> None:
    w = Worker()
    t1 = datetime(2026, 11, 22, 15, 2, tzinfo=timezone.utc).timestamp()
    w.send([created("L1", t1, eid="crm-1")], now=t1)
    w.send([created("L1", t1 - 5 * MINUTE, eid="crm-2")], now=t1 + 1)  # the CRM's first record, late
    lead = w.lead("L1")
    assert (lead["created"], lead["deadline"]) == (t1 - 5 * MINUTE, t1 - 5 * MINUTE + SLA)
    assert nonzero(w.family.cells.get(0, f"hour|{hour_bucket(t1)}")["team"]["north"]) == {}
    assert nonzero(w.family.cells.get(0, f"hour|{hour_bucket(t1 - 5 * MINUTE)}")["team"]["north"]) == {"created": 1}
    assert w.fields("team", "north") == {"created": 1}
    assert w.alerts(t1 - 5 * MINUTE + SLA - 1) == []
    [alert] = w.alerts(t1)
    assert parse(alert["deadline"]) == t1 - 5 * MINUTE + SLA
    assert w.alerts(t1 + SLA) == [alert], "the heap entry of the old deadline fires nothing more"


def test_a_touch_before_any_assignment_is_credited_to_unassigned() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([created("L1", t0, rep=None), touch("L1", t0 + 100, rep="dev"), assigned("L1", t0 + 200, "ben")])
    assert w.lead("L1")["touch_owner"] in (None, UNASSIGNED)
    assert w.fields("rep", UNASSIGNED)["touched"] == 1


def test_the_leads_team_comes_from_lead_created_whatever_the_arrival_order() -> None:
    in_order, out_of_order = Worker(), Worker()
    t0 = NOW - HOUR
    lead_event, helper_touch = created("L1", t0, team="north"), touch("L1", t0 + 60, rep="cleo", team="south")
    in_order.send([lead_event, helper_touch])
    out_of_order.send([helper_touch, lead_event])
    assert in_order.lead("L1")["team"] == "north"
    assert out_of_order.lead("L1")["team"] == "north"


# --- replays and crashes ----------------------------------------------------------------------------------------

T0 = NOW - 3 * HOUR
COMMITTED = [
    created("A", T0, rep="anna"),
    touch("A", T0 + 900, rep="anna"),  # late ...
    touch("B", T0 + 100, rep="ben"),  # ... a touch before its lead
    created("C", T0 + 60, rep="cleo", team="south"),
    touch("C", T0 + 200, rep="cleo"),
]
CRASHED = [
    touch("A", T0 + 250, rep="anna", kind="email.sent"),  # an earlier touch: A becomes within SLA
    created("B", T0, rep="ben"),  # B's creation, after its touch
    assigned("C", T0 + 100, "dev"),  # before C's touch: the credit moves from cleo to dev
    created("D", T0 + 30, rep="anna", source="web"),
    COMMITTED[4],  # a redelivered touch of C (same event_id, new offset)
]
FINAL = {
    ("team", "north"): {"created": 3, "touched": 2, "within_sla": 2, "response_sum_s": 350, "le_120": 1, "le_300": 1},
    ("team", "south"): {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 140, "le_180": 1},
    ("rep", "anna"): {"created": 2, "touched": 1, "within_sla": 1, "response_sum_s": 250, "le_300": 1},
    ("rep", "ben"): {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 100, "le_120": 1},
    ("rep", "dev"): {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 140, "le_180": 1},
    ("source", "web"): {"created": 1},
}


def check_final(table: Mapping[str, bytes]) -> None:
    totals = table_totals(table)
    assert totals == recomputed(table)
    for key, fields in FINAL.items():
        assert totals[key] == fields, key
    assert ("rep", "cleo") not in totals


@pytest.fixture(params=sorted(LEAD_STORES))
def store(request: pytest.FixtureRequest) -> str:
    """How the family keeps lead states: one table row per lead, or one record per batch."""
    return request.param


def crashed_run(store: str) -> tuple[dict[str, bytes], RecordingTable]:
    """The table before the crashed batch, and after it (with the log of the batch's writes)."""
    w = Worker(store=store)
    w.process(records(0, COMMITTED))
    before = dict(w.table)
    assert isinstance(w.table, RecordingTable)
    w.table.log.clear()
    w.process(records(0, CRASHED, len(COMMITTED)))
    return before, w.table


def test_a_clean_run_gives_the_recomputed_totals(store: str) -> None:
    _, after = crashed_run(store)
    check_final(after)


def test_replay_of_the_same_offsets_after_a_crash_before_the_commit_counts_nothing_twice(store: str) -> None:
    _, after = crashed_run(store)
    replayer = Worker(RecordingTable(after), store=store)
    stats = replayer.process(records(0, CRASHED, len(COMMITTED)))
    assert stats.duplicates == 1  # only the true redelivery inside the batch
    check_final(replayer.table)
    assert table_leads(replayer.table) == table_leads(after)
    assert table_totals(replayer.table) == table_totals(after)


def test_the_batch_writes_dedup_ids_then_aggregates_then_lead_cells(store: str) -> None:
    _, after = crashed_run(store)
    kinds = [key.split("|")[1] for key, _ in after.log]
    assert kinds[0] == "dedup"
    prefix = LEAD_STORES[store][0]
    assert set(kinds) == {"dedup", "response", prefix}
    assert max(i for i, k in enumerate(kinds) if k == "response") < min(i for i, k in enumerate(kinds) if k == prefix)


def test_replay_where_aggregates_landed_but_not_the_lead_cells_counts_each_event_once(store: str) -> None:
    before, after = crashed_run(store)
    landed = dict(after)
    for key, _ in after.log:
        if key.split("|")[1] in LEAD_PREFIXES:  # these writes never reached the changelog
            if key in before:
                landed[key] = before[key]
            else:
                landed.pop(key, None)
    assert table_leads(landed) != table_leads(after)
    replayer = Worker(RecordingTable(landed), store=store)
    replayer.process(records(0, CRASHED, len(COMMITTED)))
    check_final(replayer.table)
    assert table_leads(replayer.table) == table_leads(after)


@pytest.mark.parametrize("split", [1, 2, 4])
def test_replay_of_any_prefix_of_the_batchs_writes_in_other_batch_sizes_counts_each_event_once(split: int, store: str) -> None:
    before, after = crashed_run(store)
    for landed_count in range(len(after.log) + 1):
        landed = dict(before)
        for key, value in after.log[:landed_count]:
            if value is None:
                landed.pop(key, None)
            else:
                landed[key] = value
        replayer = Worker(RecordingTable(landed), store=store)
        batch = records(0, CRASHED, len(COMMITTED))
        for start in range(0, len(batch), split):
            replayer.process(batch[start:start + split])
        check_final(replayer.table)
        assert without_wm(table_leads(replayer.table)) == without_wm(table_leads(after)), landed_count


def test_redelivered_event_ids_at_new_offsets_count_once_also_after_a_restart() -> None:
    w = Worker()
    t0 = NOW - HOUR
    lead_event, first_touch = created("L1", t0), touch("L1", t0 + 100)
    w.send([lead_event, first_touch, lead_event])
    w.send([first_touch, lead_event])
    restarted = Worker(RecordingTable(w.table))
    stats = restarted.process(records(0, [first_touch, lead_event, touch("L1", t0 + 50)], 5))
    assert stats.duplicates == 2
    assert restarted.fields("team", "north") == {
        "created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 50, "le_60": 1,
    }
    assert table_totals(restarted.table) == recomputed(restarted.table)


def test_a_restart_decodes_only_the_leads_awaiting_a_touch_or_alerting() -> None:
    w = Worker()
    t0 = NOW - HOUR
    w.send([created(f"L{i}", t0) for i in range(6)] + [touch(f"L{i}", t0 + 60) for i in range(4)])
    restarted = Worker(RecordingTable(w.table))
    restarted.processor.ensure_loaded(0)
    assert set(restarted.family.leads.loaded(0)) == {"L4", "L5"} == restarted.family.awaiting[0]


# --- alerts -----------------------------------------------------------------------------------------------------

ALERT_KEYS = {"alert", "status", "lead_id", "rep_id", "team", "source", "created_at", "deadline", "emitted_at",
              "age_seconds"}


def parse(text: str) -> float:
    at = datetime.fromisoformat(text)
    assert at.tzinfo is not None, text
    return at.timestamp()


def test_an_untouched_live_lead_fires_exactly_at_its_deadline_once_with_the_contract_fields() -> None:
    w = Worker()
    t0 = NOW
    w.send([created("L1", t0, rep="anna", team="north", source="ads")], now=t0 + 2)
    assert w.alerts(t0 + SLA - 0.001) == []
    assert w.family.due_alerts(w.owned, t0 + SLA) == 1  # driven by the clock: no event needed
    [(partition, lead_id, alert)] = w.family.pending_alerts(w.owned)
    assert (partition, lead_id) == (0, "L1")
    assert set(alert) == ALERT_KEYS
    assert {k: alert[k] for k in ("alert", "status", "lead_id", "rep_id", "team", "source")} == {
        "alert": "lead_response_sla", "status": "firing", "lead_id": "L1", "rep_id": "anna", "team": "north",
        "source": "ads",
    }
    assert (parse(alert["created_at"]), parse(alert["deadline"]), parse(alert["emitted_at"])) == (t0, t0 + SLA, t0 + SLA)
    assert alert["age_seconds"] == pytest.approx(SLA)
    assert w.family.due_alerts(w.owned, t0 + SLA + 60) == 0, "never twice"
    assert w.family.due_alerts(w.owned, t0 + 10 * DAY) == 0


def test_a_lead_whose_clock_check_comes_late_fires_then_with_its_age() -> None:
    w = Worker()
    w.send([created("L1", NOW)], now=NOW)
    [alert] = w.alerts(NOW + SLA + 42)
    assert parse(alert["emitted_at"]) == NOW + SLA + 42
    assert alert["age_seconds"] == pytest.approx(SLA + 42)


def test_a_touched_lead_never_fires() -> None:
    w = Worker()
    w.send([created("L1", NOW), touch("L1", NOW + 299)], now=NOW + 299)
    w.send([created("L2", NOW), touch("L2", NOW + 600)], now=NOW + 1)  # touched late but before the clock ran
    assert w.alerts(NOW + SLA) == [] and w.alerts(NOW + DAY) == []


@pytest.mark.parametrize(("processed_after_deadline", "fires"), [(0, True), (LIVE_GRACE_S, True), (LIVE_GRACE_S + 1, False),
                                                                  (3 * DAY, False)])
def test_a_backfilled_lead_processed_after_deadline_plus_grace_never_fires(
    processed_after_deadline: float, fires: bool
) -> None:
    w = Worker()
    t0 = NOW - DAY
    now = t0 + SLA + processed_after_deadline
    w.send([created("L1", t0)], now=now)
    assert len(w.alerts(now)) == int(fires)
    assert len(w.alerts(now + DAY)) == int(fires)
    assert w.fields("team", "north") == {"created": 1}, "measured even when it does not alert"


def test_a_replayed_lead_arriving_infinitely_late_is_measured_but_never_fires() -> None:
    w = Worker()
    [record] = records(0, [created("L1", NOW)], 0)
    w.process([(*record, float("inf"))], now=NOW)
    assert w.alerts(NOW + SLA) == [] and w.alerts(NOW + DAY) == []
    assert w.fields("team", "north") == {"created": 1}


def test_a_touch_after_firing_resolves_and_each_status_is_published_once_also_after_a_reload(store: str) -> None:
    w = Worker(store=store)
    t0 = NOW
    w.send([created("L1", t0, rep="anna")], now=t0)
    [firing] = w.alerts(t0 + SLA)
    assert firing["status"] == "firing"
    # not yet recorded as published: a reloaded worker still has it to publish
    reloaded = Worker(dict(w.table), store=store)
    assert reloaded.processor.ensure_loaded(0)
    assert [a["status"] for _, _, a in reloaded.family.pending_alerts({0})] == ["firing"]
    w.mark_published(0, "L1", "firing")
    assert w.family.pending_alerts(w.owned) == []
    reloaded = Worker(dict(w.table), store=store)
    reloaded.processor.ensure_loaded(0)
    assert reloaded.family.pending_alerts({0}) == []
    assert reloaded.family.due_alerts({0}, t0 + DAY) == 0, "a reloaded worker does not fire it again"

    w.send([touch("L1", t0 + 500, rep="anna")], now=t0 + 510)
    [(_, _, resolved)] = w.family.pending_alerts(w.owned)
    assert set(resolved) == ALERT_KEYS
    assert (resolved["status"], resolved["lead_id"], resolved["rep_id"]) == ("resolved", "L1", "anna")
    assert parse(resolved["emitted_at"]) == t0 + 510 and resolved["age_seconds"] == pytest.approx(510)
    assert parse(resolved["deadline"]) == t0 + SLA
    w.mark_published(0, "L1", "resolved")
    assert w.family.pending_alerts(w.owned) == []
    reloaded = Worker(dict(w.table), store=store)
    reloaded.processor.ensure_loaded(0)
    assert reloaded.family.pending_alerts({0}) == []
    w.send([touch("L1", t0 + 400, rep="anna")], now=t0 + 600)  # an earlier touch: no second resolution
    assert w.family.pending_alerts(w.owned) == []


def test_firing_and_resolved_both_pending_go_out_firing_first() -> None:
    w = Worker()
    w.send([created("L1", NOW)], now=NOW)
    w.alerts(NOW + SLA)
    w.send([touch("L1", NOW + SLA + 5)], now=NOW + SLA + 5)
    assert [a["status"] for _, _, a in w.family.pending_alerts(w.owned)] == ["firing", "resolved"]
    w.mark_published(0, "L1", "firing")
    assert [a["status"] for _, _, a in w.family.pending_alerts(w.owned)] == ["resolved"]


def test_a_reloaded_partition_rebuilds_awaiting_breaches_and_deadlines_from_the_table(store: str) -> None:
    w = Worker(store=store)
    w.send([
        created("A", NOW - 100, rep="anna"),
        created("B", NOW - 250, rep="ben", team="south"),
        created("C", NOW - 2000, rep="cleo"),
        touch("C", NOW - 1500, rep="cleo"),
        touch("X", NOW - 10, rep="dev"),
    ], now=NOW)
    reloaded = Worker(dict(w.table), store=store)
    reloaded.processor.ensure_loaded(0)
    for at in (NOW, NOW + 100, NOW + 250):
        assert reloaded.family.awaiting_by_team({0}, at) == w.family.awaiting_by_team(w.owned, at)
        assert reloaded.family.breaches({0}, at) == w.family.breaches(w.owned, at)
    assert reloaded.family.due_alerts({0}, NOW + 49) == 0
    assert reloaded.family.due_alerts({0}, NOW + 50) == 1  # B: created NOW-250, due NOW+50
    assert reloaded.family.due_alerts({0}, NOW + 200) == 1  # A
    assert [lead for _, lead, _ in reloaded.family.pending_alerts({0})] == ["A", "B"]


def test_alerts_of_partitions_not_owned_are_neither_fired_nor_pending() -> None:
    w = Worker()
    w.send([created("L1", NOW)], now=NOW, partition=0)
    w.send([created("L2", NOW)], now=NOW, partition=1)
    assert w.family.due_alerts({1}, NOW + SLA) == 1
    assert [(p, lead) for p, lead, _ in w.family.pending_alerts({0, 1})] == [(1, "L2")]
    assert w.family.pending_alerts({0}) == []


def expired_lead_run(store: str) -> tuple[Worker, float]:
    """L1 touched in time and then older than retention (2 days), L2 from its first batch still kept."""
    t0 = NOW - 3 * DAY
    w = Worker(store=store, retention_s=2 * DAY)
    w.send([created("L1", t0, rep="anna"), created("L2", t0 + 200, rep="ben"), touch("L2", t0 + 250, rep="ben")],
           now=t0 + 10)
    w.send([touch("L1", t0 + 100, rep="anna")], now=t0 + 100)
    assert w.alerts(t0 + DAY) == []
    later = t0 + 2 * DAY + 150  # L1 (newest t0+100) is past retention, L2 (newest t0+250) is not
    w.send([created("L3", later, rep="cleo")], now=later)  # its batch runs the expiry pass
    return w, later


def test_lead_states_older_than_retention_are_expired_and_their_aggregates_stay(store: str) -> None:
    w, later = expired_lead_run(store)
    assert {lead_id for _, lead_id in table_leads(w.table)} == {"L2", "L3"}
    assert w.fields("rep", "anna") == {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 100, "le_120": 1}
    assert w.family.breaches(w.owned, later) == {}


def test_an_expired_lead_stays_gone_after_a_reload_and_never_alerts(store: str) -> None:
    w, later = expired_lead_run(store)
    reloaded = Worker(dict(w.table), store=store, retention_s=2 * DAY)
    reloaded.processor.ensure_loaded(0)  # the alert clock loads owned partitions before any new batch
    assert {lead_id for lead_id, _ in reloaded.family.leads.items(0)} == {"L2", "L3"}
    assert reloaded.family.breaches({0}, later + 10) == {}
    assert reloaded.alerts(later + 10) == [], "a lead touched in time two days ago must not alert"


# --- business hours ---------------------------------------------------------------------------------------------

NINE_TO_FIVE = {"timezone": "Europe/Oslo", "hours": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}


def business_worker() -> Worker:
    config = Config.model_validate({"business_hours": {"teams": {"north": NINE_TO_FIVE}}})

    def deadline_of(created_at: float, team: str) -> float:
        hours = config.business_hours_for(team)
        if hours.is_always_open:
            return created_at + SLA
        return add_business_seconds(hours, datetime.fromtimestamp(created_at, timezone.utc), SLA).timestamp()

    def business_seconds(start: float, end: float, team: str) -> float:
        hours = config.business_hours_for(team)
        if hours.is_always_open or end <= start:
            return max(0.0, end - start)
        utc = timezone.utc
        return business_seconds_between(hours, datetime.fromtimestamp(start, utc), datetime.fromtimestamp(end, utc))

    return Worker(deadline_of=deadline_of, business_seconds=business_seconds)


def oslo(*args: int) -> float:
    return datetime(*args, tzinfo=OSLO).timestamp()  # type: ignore[misc]


def test_friday_1900_lead_with_300_s_sla_is_due_monday_0905_and_alerts_then() -> None:
    w = business_worker()
    friday = oslo(2026, 11, 20, 19, 0)
    w.send([created("L1", friday, team="north"), created("L2", friday, team="south")], now=friday + 1)
    assert w.lead("L1")["deadline"] == oslo(2026, 11, 23, 9, 5)
    assert w.lead("L2")["deadline"] == friday + SLA, "a team without business hours: around the clock"
    assert [a["lead_id"] for a in w.alerts(friday + SLA)] == ["L2"]
    assert w.family.due_alerts(w.owned, oslo(2026, 11, 23, 9, 4, 59)) == 0
    assert w.family.due_alerts(w.owned, oslo(2026, 11, 23, 9, 5)) == 1
    assert {a["lead_id"] for a in w.alerts(oslo(2026, 11, 23, 9, 5))} == {"L1", "L2"}


def test_response_is_measured_in_business_seconds() -> None:
    w = business_worker()
    friday = oslo(2026, 11, 20, 19, 0)
    w.send([created(f"L{i}", friday, team="north") for i in range(4)], now=friday)
    w.send([
        touch("L0", oslo(2026, 11, 21, 12, 0)),  # Saturday: no open time has passed
        touch("L1", oslo(2026, 11, 23, 9, 3)),  # 180 business seconds
        touch("L2", oslo(2026, 11, 23, 9, 5)),  # at the deadline
        touch("L3", oslo(2026, 11, 23, 9, 6)),  # late
    ], now=oslo(2026, 11, 23, 10, 0))
    assert [w.lead(f"L{i}")["response_s"] for i in range(4)] == [0, 180, 300, 360]
    assert w.fields("team", "north") == {
        "created": 4, "touched": 4, "within_sla": 3, "late": 1, "response_sum_s": 840,
        "le_15": 1, "le_180": 1, "le_300": 1, "le_600": 1,
    }


def test_response_and_deadline_use_the_same_hours_after_a_team_change() -> None:
    w = business_worker()
    friday = oslo(2026, 11, 20, 19, 0)
    w.send([created("L1", friday, team="north")], now=friday)
    w.send([assigned("L1", friday + 60, "ben", team="south")], now=friday + 60)  # south: around the clock
    w.send([touch("L1", oslo(2026, 11, 21, 12, 0), rep="ben")], now=oslo(2026, 11, 21, 12, 0))
    lead = w.lead("L1")
    assert lead["deadline"] == oslo(2026, 11, 23, 9, 5), "reassignment moves the responsibility, not the clock"
    south = w.fields("team", "south")
    assert south["within_sla"] == 1
    assert south.get("response_sum_s", 0) <= SLA, "within SLA, yet a response time 17 hours long"


# --- gauges -----------------------------------------------------------------------------------------------------


def test_awaiting_counts_live_untouched_leads_per_team_and_the_oldest_age() -> None:
    w = Worker()
    w.send([
        created("N1", NOW - 100),
        created("N2", NOW - 800),
        created("N3", NOW - 5000, rep="ben"),  # a backfill: not live
        created("N4", NOW - 200),
        touch("N4", NOW - 150),
        created("S1", NOW - 50, team="south"),
        touch("X1", NOW - 10),  # a touch of a lead not created yet
    ], now=NOW)
    assert w.family.awaiting_by_team(w.owned, NOW) == {"north": (2, 800), "south": (1, 50)}
    assert w.family.awaiting_by_team(w.owned, NOW + 60) == {"north": (2, 860), "south": (1, 110)}
    w.send([touch("N2", NOW + 1)], now=NOW + 1)
    assert w.family.awaiting_by_team(w.owned, NOW + 60) == {"north": (1, 160), "south": (1, 110)}
    assert w.family.awaiting_by_team(set(), NOW) == {}


def test_breaches_count_late_touches_and_untouched_leads_past_deadline_once_each() -> None:
    w = Worker()
    w.send([
        created("A", NOW - 800, rep="anna"),  # waiting past its deadline
        created("B", NOW - 5000, rep="ben"),  # a backfill waiting past its deadline
        created("C", NOW - 2000, rep="cleo"),
        touch("C", NOW - 1500, rep="cleo"),  # touched late
        created("D", NOW - 100, rep="dev"),  # deadline not reached
        created("E", NOW - 1000, rep="eve", team="south"),
        touch("E", NOW - 900, rep="eve"),  # in time
    ], now=NOW)
    expected = {("north", "anna"): 1, ("north", "ben"): 1, ("north", "cleo"): 1}
    assert w.family.breaches(w.owned, NOW) == expected
    w.send([touch("A", NOW + 10, rep="anna")], now=NOW + 10)  # the waiting breach is touched, late
    assert w.family.breaches(w.owned, NOW + 10) == expected
    assert w.family.breaches(w.owned, NOW + 200) == expected | {("north", "dev"): 1}


# --- rolling windows --------------------------------------------------------------------------------------------

AGES_H = [0.2, 0.9, 3, 23.5, 30, 100, 167.5, 200, 500, 719.5, 745]


def rolling_leads() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and the expected final lead states of leads created at several ages before NOW."""
    events, states = [], []
    for i, age in enumerate(AGES_H):
        at = NOW - age * HOUR
        rep, team = ("anna", "north") if i % 2 else ("ben", "south")
        events.append(created(f"R{i}", at, rep=rep, team=team, source="web" if i % 3 else "ads"))
        response = [None, 60, 400, 5000][i % 4]
        if response is not None:
            events.append(touch(f"R{i}", at + response, rep=rep))
        states.append(state(at, None if response is None else at + response, rep=rep, team=team,
                            source="web" if i % 3 else "ads"))
    return events, states


@pytest.mark.parametrize("render_after_h", [0, 2.5, 30])
def test_rolling_windows_1h_24h_7d_30d_equal_a_recomputation(render_after_h: float) -> None:
    events, states = rolling_leads()
    w = Worker()
    w.send(events, now=NOW)
    render_at = NOW + render_after_h * HOUR
    w.family.render(w.owned, NOW)
    w.family.mark_rolling_dirty(w.owned)
    partials = {(p.record["scope"], p.record["id"], p.record["window"]): p.fields for p in w.family.render(w.owned, render_at)}
    windows = {"rolling:1h": 1, "rolling:24h": 24, "rolling:7d": 168, "rolling:30d": 720}
    checked = 0
    for window, hours in windows.items():
        kept = set(rolling_hour_range(hours, render_at))
        expected = normalise(batch_recompute([s for s in states if hour_bucket(s.created or 0.0) in kept]))
        for scope, ident in itertools.product(("rep", "team", "source"), ("anna", "ben", "north", "south", "ads", "web")):
            got = partials.get((scope, ident, window))
            if got is None:
                continue
            checked += 1
            assert set(got) <= set(ADDITIVE_FIELDS)
            assert nonzero(got) == expected.get((scope, ident), {}), (scope, ident, window)
    assert checked == 4 * 6


def test_rendered_all_time_and_day_partials_equal_a_recomputation() -> None:
    events, states = rolling_leads()
    w = Worker()
    w.send(events, now=NOW)
    partials = {(p.record["scope"], p.record["id"], p.record["window"]): p for p in w.family.render(w.owned, NOW)}
    everything = normalise(batch_recompute(states))
    today = normalise(batch_recompute([s for s in states if iso(s.created or 0.0)[:10] == "2026-11-22"]))
    for scope, ident in (("rep", "anna"), ("team", "south"), ("source", "web")):
        assert nonzero(partials[(scope, ident, "all")].fields) == everything[(scope, ident)]
        assert nonzero(partials[(scope, ident, "day:2026-11-22")].fields) == today.get((scope, ident), {})
        assert partials[(scope, ident, "all")].redis_key == f"salespulse:lead_response:{scope}:{ident}:all"
    assert not any(scope.startswith("team_") for scope, _, _ in partials), "pair scopes are not published"


# --- the property: any history, any order Kafka allows, any crash ----------------------------------------------

REPS = ["anna", "ben", "cleo", "dev"]
TOUCH_KINDS = ["call.logged", "email.sent", "meeting.booked", "visit", "outbound"]
OTHER_KINDS = ["email.opened", "email.replied", "meeting.held", "activity.logged"]
PARTITIONS = 3


@st.composite
def lead_history(draw: st.DrawFn, number: int) -> list[dict[str, Any]]:
    """One lead's events in log order: assignments in their own order, creation and touches anywhere."""
    lead_id = f"L{number}"
    at = NOW - draw(st.integers(0, 5 * 24 * 60)) * MINUTE
    team = draw(st.sampled_from(["north", "south"]))
    has_creation = draw(st.integers(0, 9)) > 0
    offsets = draw(st.lists(st.integers(1, 4000), max_size=3, unique=True))
    assignments = [
        assigned(lead_id, at + offset, draw(st.sampled_from(REPS)), team=draw(st.sampled_from([None, "north", "south"])))
        for offset in sorted(offsets)
    ]
    loose = []
    if has_creation:
        loose.append(created(lead_id, at, rep=draw(st.sampled_from(REPS)), team=team,
                             source=draw(st.sampled_from(["ads", "web"]))))
    for _ in range(draw(st.integers(0, 4))):
        when = at + draw(st.one_of(st.sampled_from([-120, -1, 0, 1, 299, 300, 301]), st.integers(0, 20000)))
        kind = draw(st.sampled_from(TOUCH_KINDS + OTHER_KINDS))
        rep = draw(st.sampled_from(REPS))
        if kind == "visit":
            loose.append(touch(lead_id, when, rep=rep, kind="activity.logged") | {"kind": "visit"})
        elif kind == "outbound":
            loose.append(touch(lead_id, when, rep=rep, kind="activity.logged", outbound=True))
        else:
            loose.append(touch(lead_id, when, rep=rep, kind=kind))
    history = list(assignments)
    for event in loose:
        history.insert(draw(st.integers(0, len(history))), event)
    for _ in range(draw(st.integers(0, 2))):  # redeliveries: the same event later in the same key's log
        if history:
            again = draw(st.sampled_from(history))
            history.insert(draw(st.integers(history.index(again) + 1, len(history))), again)
    return history


def reference_leads(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The final lead states, computed from the distinct events without the stream code."""
    by_lead: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            by_lead.setdefault(event["lead_id"], []).append(event)
    leads = {}
    for lead_id, history in by_lead.items():
        creation = next((e for e in history if e["type"] == "lead.created"), None)
        if creation is None:
            continue
        created_at = parse(creation["occurred_at"])
        owners = [(created_at, creation["rep_id"])] + [
            (parse(e["occurred_at"]), e["rep_id"]) for e in history if e["type"] == "lead.assigned"
        ]
        owners.sort()
        touches = [
            parse(e["occurred_at"]) for e in history
            if e["type"] in ("call.logged", "email.sent", "meeting.booked")
            or (e["type"] == "activity.logged" and (e.get("outbound") or e["kind"] == "visit"))
        ]
        team = creation["team"]
        for e in history:  # assignments are in event-time order in the log
            if e["type"] == "lead.assigned" and e.get("team"):
                team = e["team"]
        lead: dict[str, Any] = {
            "created": created_at,
            "deadline": created_at + SLA,
            "touch": min(touches) if touches else None,
            "owner": owners[-1][1],
            "team": team,
            "source": creation["source"],
        }
        if touches:
            # the owner when the touch happened; a touch stamped before creation counts as at creation
            effective = max(lead["touch"], created_at)
            lead["touch_owner"] = [rep for at, rep in owners if at <= effective][-1]
            lead["response_s"] = max(0.0, lead["touch"] - created_at)
        leads[lead_id] = lead
    return leads


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Record], random.Random, str]:
    histories = [draw(lead_history(n)) for n in range(draw(st.integers(1, 7)))]
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
        partition = int(event["lead_id"][1:]) % PARTITIONS
        stream.append((partition, next_offset[partition], orjson.dumps(event)))
        next_offset[partition] += 1
    return order, stream, rnd, draw(st.sampled_from(sorted(LEAD_STORES)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_any_history_order_split_and_crash_gives_the_batch_recomputation(
    run: tuple[list[dict[str, Any]], list[Record], random.Random, str],
) -> None:
    events, stream, rnd, store = run
    worker = Worker(store=store)
    committed = 0
    crashes = 0
    now = NOW + 2 * HOUR
    while committed < len(stream):
        now += rnd.choice([0, 1, 30, 61, 900])  # the wall clock moves on (expiry passes, hour cells)
        batch = stream[committed:committed + rnd.randint(1, 8)]
        if crashes < 3 and rnd.random() < 0.3:
            table = worker.table
            assert isinstance(table, RecordingTable)
            landed = crash_mid_write(table, lambda: worker.process(batch, now), rnd)
            worker = Worker(landed, store=store)  # restart from the last commit
            crashes += 1
            continue
        worker.process(batch, now)
        committed += len(batch)
    expected = reference_leads(events)
    final = {lead_id: LEAD_CODEC.encode(lead) for (_, lead_id), lead in table_leads(worker.table).items()
             if lead.created is not None}
    assert set(final) == set(expected)
    for lead_id, lead in expected.items():
        got = {name: final[lead_id].get(name) for name in lead}
        assert got == lead, lead_id
    assert table_totals(worker.table) == normalise(batch_recompute([LEAD_CODEC.decode("", lead) for lead in expected.values()]))
