"""The engagement contribution as computed for speed equals its plain definition, and the remembered
contributions of the stream never change what reaches the cells (whatever the cache keeps).

``reference_contribution`` is the definition of METRICS.md section 3 written plainly (sort every attempt,
filter, count); ``salespulse.metrics.engagement.contribution`` computes the same with fewer passes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salespulse.families.engagement.rules import (
    CONNECTABLE,
    ENGAGEMENT_KINDS,
    UNASSIGNED,
    UNKNOWN_SOURCE,
    contribution,
    last_touch,
)
from salespulse.families.engagement import family as engagement_stream
from salespulse.families.engagement.state import OUTREACH_CODEC
from tests.unit.test_engagement import DAY, HOUR, NOW, Worker, ev, table_totals


def reference_attempts(lead: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = [(at, ch, rep, team, bool(conn), ident) for at, ch, rep, team, conn, ident in lead.get("touches", ())]
    out += [
        (e["at"], "email", e["rep"], e["team"], bool(e.get("replied")), i)
        for i, e in lead.get("emails", {}).items() if e.get("at") is not None
    ]
    out += [
        (m["at"], "meeting", m["rep"], m["team"], bool(m.get("held")), i)
        for i, m in lead.get("meetings", {}).items() if m.get("at") is not None
    ]
    return sorted(out)


def reference_contribution(lead: dict[str, Any]) -> dict[tuple[Any, ...], float]:
    out: dict[tuple[Any, ...], float] = {}

    def credit(at: float, rep: str, team: str, field: str, value: float = 1) -> None:
        for scope, ident in (("rep", rep), ("team", team)):
            out[(at, scope, ident, field)] = out.get((at, scope, ident, field), 0) + value

    for email in lead.get("emails", {}).values():
        at = email.get("at")
        if at is None:
            continue
        rep, team = email["rep"], email["team"]
        credit(at, rep, team, "emails_sent")
        credit(at, rep, team, "emails_personalized" if email.get("personalized") else "emails_generic")
        for kind in ENGAGEMENT_KINDS:
            if email.get(kind):
                credit(at, rep, team, f"emails_{kind}")
                key = (at, "rep_team", f"{rep}\t{team}", f"emails_{kind}")
                out[key] = out.get(key, 0) + 1
    found = reference_attempts(lead)
    reached: dict[str, tuple[float, str, str]] = {}
    for at, channel, rep, team, connected, _ in found:
        credit(at, rep, team, f"attempts:{channel}")
        if connected and channel in CONNECTABLE:
            credit(at, rep, team, f"connected:{channel}")
            reached.setdefault(channel, (at, rep, team))
    won = lead.get("won")
    for channel, (at, rep, team) in reached.items():
        credit(at, rep, team, f"reached:{channel}")
        if won is not None and won >= at:
            credit(at, rep, team, f"won:{channel}")
    converted = lead.get("converted")
    if converted is not None:
        before = [a for a in found if a[0] <= converted]
        rep, team = (before[-1][2], before[-1][3]) if before else (UNASSIGNED, lead.get("team") or UNASSIGNED)
        credit(converted, rep, team, "leads_converted")
        credit(converted, rep, team, "touches_to_convert", len(before))
    elif lead.get("quiet") and found:
        credit(found[-1][0], found[-1][2], found[-1][3], "leads_quiet")
        credit(found[-1][0], found[-1][2], found[-1][3], "touches_before_quiet", len(found))
    firsts = sorted(
        (m["at"], i, m) for i, m in lead.get("meetings", {}).items()
        if m.get("at") is not None and m.get("kind") in (None, "first")
    )
    meeting = firsts[0] if firsts else None
    if lead.get("created") is not None:
        source = lead.get("source") or UNKNOWN_SOURCE
        out[(lead["created"], "source", source, "leads")] = 1
        if meeting is not None:
            out[(lead["created"], "source", source, "leads_first_meeting")] = 1
    if found:
        credit(found[0][0], found[0][2], found[0][3], "outreach_leads")
        if meeting is not None and meeting[0] >= found[0][0]:
            credit(found[0][0], found[0][2], found[0][3], "outreach_first_meeting")
    if meeting is not None:
        at, meeting_id, first = meeting
        credit(at, first["rep"], first["team"], "first_meetings")
        later = any(i != meeting_id and m.get("at") is not None and m["at"] > at for i, m in lead["meetings"].items())
        if later or (converted is not None and converted >= at):
            credit(at, first["rep"], first["team"], "first_meeting_next_step")
    return out


times = st.integers(0, 12).map(float)  # few distinct instants: ties between attempts are common
reps = st.sampled_from(["anna", "ben", "unassigned"])
teams = st.sampled_from(["north", "south", "unassigned"])


@st.composite
def lead_states(draw: st.DrawFn) -> dict[str, Any]:
    lead: dict[str, Any] = {"wm": draw(st.integers(-1, 9))}
    touches = draw(st.lists(st.tuples(times, st.sampled_from(["call", "social", "other"]), reps, teams, st.booleans()), max_size=4))
    if touches or draw(st.booleans()):
        lead["touches"] = [[at, ch, rep, team, conn, f"t{i}"] for i, (at, ch, rep, team, conn) in enumerate(touches)]
    emails = {}
    for i in range(draw(st.integers(0, 3))):
        email: dict[str, Any] = {kind: True for kind in ENGAGEMENT_KINDS if draw(st.booleans())}
        if draw(st.booleans()):
            email.update(at=draw(times), rep=draw(reps), team=draw(teams), personalized=draw(st.booleans()))
        emails[f"m{i}"] = email
    if emails or draw(st.booleans()):
        lead["emails"] = emails
    meetings = {}
    for i in range(draw(st.integers(0, 3))):
        meeting: dict[str, Any] = {"held": True} if draw(st.booleans()) else {}
        if draw(st.booleans()):
            meeting.update(at=draw(times), rep=draw(reps), team=draw(teams), kind=draw(st.sampled_from([None, "first", "demo"])))
        meetings[f"g{i}"] = meeting
    if meetings or draw(st.booleans()):
        lead["meetings"] = meetings
    for key in ("created", "converted", "won"):
        if draw(st.booleans()):
            lead[key] = draw(times)
    if draw(st.booleans()):
        lead["quiet"] = True
    if draw(st.booleans()):
        lead["source"] = draw(st.sampled_from(["web", "referral"]))
    if draw(st.booleans()):
        lead["team"] = draw(teams)
    return lead


@settings(max_examples=500, deadline=None)
@given(lead_states())
def test_contribution_equals_its_plain_definition(lead: dict[str, Any]) -> None:
    assert contribution(OUTREACH_CODEC.decode("", lead)) == reference_contribution(lead)


@settings(max_examples=300, deadline=None)
@given(lead_states())
def test_a_lead_is_written_back_as_the_json_it_was_read_from(lead: dict[str, Any]) -> None:
    written = {key: value for key, value in lead.items() if value not in ([], {})}
    assert OUTREACH_CODEC.encode(OUTREACH_CODEC.decode("", lead)) == written


@settings(max_examples=300, deadline=None)
@given(lead_states())
def test_last_touch_is_the_latest_attempt(lead: dict[str, Any]) -> None:
    found = reference_attempts(lead)
    assert last_touch(OUTREACH_CODEC.decode("", lead)) == (found[-1][0] if found else None)


def _scenario() -> list[dict[str, Any]]:
    """Leads touched, engaged, revived, converted and gone quiet, interleaved."""
    t = NOW - 20 * DAY
    out = []
    for n in range(6):
        lead = f"L{n}"
        out += [
            ev("lead.created", lead, t + n * HOUR, source="web"),
            ev("email.sent", lead, t + n * HOUR + 60, email_id=f"m{n}"),
            ev("call.logged", lead, t + n * HOUR + 120, outcome="connected"),
            ev("meeting.booked", lead, t + n * HOUR + 180, meeting_id=f"g{n}", kind="first"),
        ]
    for n in range(6):
        lead = f"L{n}"
        out += [ev("email.opened", lead, t + DAY + n, email_id=f"m{n}"), ev("meeting.held", lead, t + DAY + n, meeting_id=f"g{n}")]
    out += [ev("call.logged", "L0", t + 10 * DAY), ev("lead.converted", "L1", t + 11 * DAY)]
    out += [ev("lead.deal_closed", "L1", t + 12 * DAY), ev("call.logged", "L2", t + 13 * DAY, outcome="connected")]
    return out


@pytest.mark.parametrize("cache_size", [0, 1, 3])
def test_cells_are_the_same_whatever_the_contribution_cache_keeps(monkeypatch: pytest.MonkeyPatch, cache_size: int) -> None:
    events = _scenario()
    batches = [events[i : i + 5] for i in range(0, len(events), 5)]
    reference = Worker()
    for batch in batches:
        reference.send(batch)
    monkeypatch.setattr(engagement_stream, "CONTRIBUTION_CACHE_SIZE", cache_size)
    small = Worker()
    for batch in batches:
        small.send(batch)
    expected = table_totals(reference.table)
    assert expected[("rep", "anna")]["leads_quiet"] >= 3 and expected[("rep", "anna")]["leads_converted"] == 1
    assert table_totals(small.table) == expected
    assert table_totals(small.table, "day") == table_totals(reference.table, "day")
    assert all(len(cache) <= cache_size for cache in small.family._contributions.values())


def test_lead_states_past_retention_are_deleted_in_one_record_and_their_aggregates_stay() -> None:
    t0 = NOW - 40 * DAY  # retention is 35 days
    w = Worker()
    w.send([ev("email.sent", f"L{n}", t0 + n, email_id=f"m{n}") for n in range(5)], now=t0 + HOUR)
    w.send([ev("email.sent", "L9", NOW - HOUR, email_id="m9")], now=t0 + HOUR + 1)
    before = table_totals(w.table)
    records = set(w.table)
    w.send([ev("call.logged", "L9", NOW - 60)], now=NOW)  # this batch runs the expiry pass
    assert {lead for lead, _ in w.family.leads.items(0)} == {"L9"}
    assert set(w.family._contributions[0]) == {"L9"}
    outreach_records = [key for key in set(w.table) - records if "|outreach|" in key]
    assert len(outreach_records) <= 2  # the batch's states and one deletion record, not one per lead
    assert table_totals(w.table)[("rep", "anna")]["emails_sent"] == before[("rep", "anna")]["emails_sent"] == 6
    reloaded = Worker(dict(w.table))
    reloaded.processor.ensure_loaded(0)
    assert {lead for lead, _ in reloaded.family.leads.items(0)} == {"L9"}
