"""Activity counting (METRICS.md section 3, CONTRACT.md ``activities_total``): which events count, and how."""

from __future__ import annotations

from typing import Any

import pytest

from salespulse.families.fields import add_fields
from salespulse.families.activity.rules import (
    NO_OUTCOME,
    UNASSIGNED,
    Activity,
    activity_of,
    count_activities,
    normalise_kind,
    split_field,
    with_rollups,
)
from salespulse.models.events import CallLogged, EventAdapter
from tests.unit.test_event_models import EXAMPLES, example

ACTIVITY_TYPES = {"call.logged", "email.sent", "meeting.booked", "meeting.held", "activity.logged"}


def event(event_type: str, **changes: Any) -> Any:
    return EventAdapter.validate_python(example(event_type, **changes))


# --- which events are activities --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "changes", "kind", "outcome"),
    [
        ("call.logged", {"outcome": "connected"}, "call", "connected"),
        ("call.logged", {"outcome": "no_answer"}, "call", "no_answer"),
        ("call.logged", {"outcome": "voicemail"}, "call", "voicemail"),
        ("call.logged", {"outcome": "busy"}, "call", "busy"),
        ("call.logged", {"outcome": "unknown"}, "call", "unknown"),
        ("email.sent", {}, "email_sent", NO_OUTCOME),
        ("email.sent", {"personalized": True}, "email_sent", NO_OUTCOME),
        ("meeting.booked", {"kind": "demo"}, "meeting_booked", NO_OUTCOME),
        ("meeting.held", {}, "meeting_held", NO_OUTCOME),
        ("activity.logged", {"kind": "visit"}, "visit", NO_OUTCOME),
        ("activity.logged", {"kind": "LinkedIn Message"}, "linkedin_message", NO_OUTCOME),
    ],
)
def test_each_activity_type_counts_as_its_kind_and_outcome(
    event_type: str, changes: dict[str, Any], kind: str, outcome: str
) -> None:
    activity = activity_of(event(event_type, rep_id="R7", team="north", **changes))
    assert activity == Activity("R7", "north", kind, outcome)


@pytest.mark.parametrize("event_type", sorted(set(EXAMPLES) - ACTIVITY_TYPES))
def test_non_activity_event_is_not_counted(event_type: str) -> None:
    assert activity_of(EventAdapter.validate_python(EXAMPLES[event_type]), {"R1": "north"}) is None


def test_every_activity_type_is_counted() -> None:
    counted = {t for t in EXAMPLES if activity_of(EventAdapter.validate_python(EXAMPLES[t])) is not None}
    assert counted == ACTIVITY_TYPES


@pytest.mark.parametrize("thing", [None, {"type": "call.logged", "rep_id": "R1"}, "call.logged"])
def test_a_value_that_is_not_an_event_model_is_not_counted(thing: object) -> None:
    assert activity_of(thing) is None


# --- rep and team -----------------------------------------------------------------------------------------------


def test_event_team_wins_over_the_configured_team_of_the_rep() -> None:
    assert activity_of(event("call.logged", rep_id="R1", team="south"), {"R1": "north"}).team == "south"


def test_team_comes_from_the_rep_mapping_when_the_event_has_none() -> None:
    assert activity_of(event("email.sent", rep_id="R1"), {"R1": "north"}).team == "north"


def test_unknown_team_is_unassigned() -> None:
    assert activity_of(event("email.sent", rep_id="R9"), {"R1": "north"}).team == UNASSIGNED
    assert activity_of(event("email.sent", rep_id="R9")).team == UNASSIGNED
    assert UNASSIGNED == "unassigned"


def test_unknown_rep_is_unassigned() -> None:
    # every activity model requires rep_id; a CRM mapper building events without validation must still not crash
    call = CallLogged.model_construct(
        **(EventAdapter.validate_python(EXAMPLES["call.logged"]).model_dump() | {"rep_id": None})
    )
    activity = activity_of(call, {"R1": "north"})
    assert activity is not None
    assert (activity.rep, activity.team) == (UNASSIGNED, UNASSIGNED)


def test_unassigned_rep_can_still_have_a_team_of_its_own() -> None:
    call = CallLogged.model_construct(
        **(EventAdapter.validate_python(EXAMPLES["call.logged"]).model_dump() | {"rep_id": None, "team": "north"})
    )
    assert activity_of(call).team == "north"


# --- field names ------------------------------------------------------------------------------------------------


def test_field_is_kind_colon_outcome_for_calls_and_kind_otherwise() -> None:
    assert Activity("R1", "t", "call", "busy").field == "call:busy"
    assert Activity("R1", "t", "email_sent", NO_OUTCOME).field == "email_sent"
    assert NO_OUTCOME == "none"


@pytest.mark.parametrize("activity", [Activity("R", "T", "call", "connected"), Activity("R", "T", "visit", "none")])
def test_split_field_inverts_activity_field(activity: Activity) -> None:
    assert split_field(activity.field) == (activity.kind, activity.outcome)


# --- normalise_kind ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("visit", "visit"),
        ("Visit", "visit"),
        ("  Visit  ", "visit"),
        ("LinkedIn Message", "linkedin_message"),
        ("follow-up", "follow_up"),
        ("follow_up", "follow_up"),
        ("Follow - Up!!", "follow_up"),
        ("call:connected", "call_connected"),
        ("SMS 2", "sms_2"),
        ("Café visit", "caf_visit"),
        ("__x__", "x"),
        ("", "other"),
        ("   ", "other"),
        ("!!!", "other"),
        ("встреча", "other"),
    ],
)
def test_normalise_kind_makes_a_safe_label_value(raw: str, kind: str) -> None:
    assert normalise_kind(raw) == kind


def test_normalise_kind_cuts_at_40_characters() -> None:
    assert normalise_kind("a" * 64) == "a" * 40
    assert len(normalise_kind("Very Long Activity Kind Name That Goes On And On")) == 40


def test_normalised_kind_never_contains_the_outcome_separator() -> None:
    activity = activity_of(event("activity.logged", kind="call:connected"))
    assert ":" not in activity.kind
    assert split_field(activity.field) == ("call_connected", NO_OUTCOME)


# --- rollups ----------------------------------------------------------------------------------------------------


def test_with_rollups_adds_kind_totals_over_outcomes_and_a_grand_total() -> None:
    counts = {"call:connected": 1, "call:no_answer": 2, "email_sent": 2, "meeting_booked": 1}
    assert with_rollups(counts) == {
        "call:connected": 1,
        "call:no_answer": 2,
        "call": 3,
        "email_sent": 2,
        "meeting_booked": 1,
        "total": 6,
    }


def test_with_rollups_of_nothing_is_a_zero_total() -> None:
    assert with_rollups({}) == {"total": 0}


def test_with_rollups_leaves_its_input_unchanged() -> None:
    counts = {"call:busy": 4}
    with_rollups(counts)
    assert counts == {"call:busy": 4}


def test_with_rollups_keeps_kinds_without_outcomes_as_they_are() -> None:
    assert with_rollups({"visit": 5, "linkedin_message": 2}) == {"visit": 5, "linkedin_message": 2, "total": 7}


def test_add_counts_merges_field_by_field() -> None:
    into = {"call:busy": 1, "visit": 2}
    assert add_fields(into, {"call:busy": 2, "email_sent": 1}) is into
    assert into == {"call:busy": 3, "visit": 2, "email_sent": 1}


# --- worked example (seed style) --------------------------------------------------------------------------------


def seed_events() -> list[Any]:
    return [
        event("call.logged", event_id="c1", rep_id="anna", outcome="connected"),
        event("call.logged", event_id="c2", rep_id="anna", outcome="no_answer"),
        event("call.logged", event_id="c3", rep_id="anna", outcome="no_answer"),
        event("email.sent", event_id="m1", rep_id="anna", email_id="E1"),
        event("email.sent", event_id="m2", rep_id="anna", email_id="E2"),
        event("meeting.booked", event_id="b1", rep_id="anna", meeting_id="G1"),
        event("email.opened", event_id="o1", email_id="E1"),  # engagement, not an activity
        event("lead.created", event_id="l1", rep_id="anna"),
        event("call.logged", event_id="c4", rep_id="ben", outcome="voicemail"),
    ]


def test_rep_with_three_calls_two_emails_and_a_meeting_has_six_activities() -> None:
    activities = [a for a in (activity_of(e, {"anna": "north"}) for e in seed_events()) if a is not None]
    per_rep = count_activities(activities)
    assert per_rep["anna"] == {"call:connected": 1, "call:no_answer": 2, "email_sent": 2, "meeting_booked": 1}
    published = with_rollups(per_rep["anna"])
    assert published["call"] == 3
    assert published["call:connected"] == 1
    assert published["call:no_answer"] == 2
    assert published["email_sent"] == 2
    assert published["meeting_booked"] == 1
    assert published["total"] == 6
    assert with_rollups(per_rep["ben"]) == {"call:voicemail": 1, "call": 1, "total": 1}
    assert {a.team for a in activities if a.rep == "anna"} == {"north"}
    assert {a.team for a in activities if a.rep == "ben"} == {UNASSIGNED}


def test_contact_rate_of_the_worked_example_is_one_in_three_calls() -> None:
    published = with_rollups(count_activities(filter(None, (activity_of(e) for e in seed_events())))["anna"])
    assert published["call:connected"] / published["call"] == pytest.approx(1 / 3)


def test_count_activities_of_nothing_is_empty() -> None:
    assert count_activities([]) == {}
