"""The canonical event models (CONTRACT.md, "Canonical event"): what validates, what is rejected and how it is named."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from salespulse.handlers.webhooks import RejectedRequest, indexed_field_errors, parse_events
from salespulse.models.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    INTERNAL_EVENT_TYPES,
    CallLogged,
    CustomerChurned,
    EmailSent,
    EventAdapter,
    event_from_json,
    event_to_json,
)

T = "2026-11-22T09:30:00+01:00"

#: One minimal valid example per contract type: only the fields the contract requires.
EXAMPLES: dict[str, dict[str, Any]] = {
    "lead.created": {"event_id": "e-lc", "type": "lead.created", "occurred_at": T, "lead_id": "L1"},
    "lead.assigned": {"event_id": "e-la", "type": "lead.assigned", "occurred_at": T, "lead_id": "L1", "rep_id": "R1"},
    "lead.qualified": {"event_id": "e-lq", "type": "lead.qualified", "occurred_at": T, "lead_id": "L1"},
    "lead.converted": {
        "event_id": "e-lv",
        "type": "lead.converted",
        "occurred_at": T,
        "lead_id": "L1",
        "deal_id": "D1",
    },
    "deal.created": {
        "event_id": "e-dc",
        "type": "deal.created",
        "occurred_at": T,
        "deal_id": "D1",
        "pipeline": "default",
        "stage": "qualified",
    },
    "deal.stage_changed": {
        "event_id": "e-ds",
        "type": "deal.stage_changed",
        "occurred_at": T,
        "deal_id": "D1",
        "pipeline": "default",
        "to_stage": "proposal",
    },
    "deal.won": {
        "event_id": "e-dw",
        "type": "deal.won",
        "occurred_at": T,
        "deal_id": "D1",
        "pipeline": "default",
        "amount": 1200.0,
    },
    "deal.lost": {"event_id": "e-dl", "type": "deal.lost", "occurred_at": T, "deal_id": "D1", "pipeline": "default"},
    "deal.updated": {"event_id": "e-du", "type": "deal.updated", "occurred_at": T, "deal_id": "D1"},
    "call.logged": {
        "event_id": "e-cl",
        "type": "call.logged",
        "occurred_at": T,
        "lead_id": "L1",
        "rep_id": "R1",
        "outcome": "connected",
    },
    "email.sent": {
        "event_id": "e-es",
        "type": "email.sent",
        "occurred_at": T,
        "lead_id": "L1",
        "rep_id": "R1",
        "email_id": "M1",
    },
    "email.opened": {"event_id": "e-eo", "type": "email.opened", "occurred_at": T, "lead_id": "L1", "email_id": "M1"},
    "email.clicked": {"event_id": "e-ec", "type": "email.clicked", "occurred_at": T, "lead_id": "L1", "email_id": "M1"},
    "email.replied": {"event_id": "e-er", "type": "email.replied", "occurred_at": T, "lead_id": "L1", "email_id": "M1"},
    "email.bounced": {"event_id": "e-eb", "type": "email.bounced", "occurred_at": T, "lead_id": "L1", "email_id": "M1"},
    "meeting.booked": {
        "event_id": "e-mb",
        "type": "meeting.booked",
        "occurred_at": T,
        "lead_id": "L1",
        "rep_id": "R1",
        "meeting_id": "G1",
    },
    "meeting.held": {
        "event_id": "e-mh",
        "type": "meeting.held",
        "occurred_at": T,
        "lead_id": "L1",
        "rep_id": "R1",
        "meeting_id": "G1",
    },
    "activity.logged": {
        "event_id": "e-al",
        "type": "activity.logged",
        "occurred_at": T,
        "lead_id": "L1",
        "rep_id": "R1",
        "kind": "visit",
    },
    "quota.set": {
        "event_id": "e-qs",
        "type": "quota.set",
        "occurred_at": T,
        "rep_id": "R1",
        "period": "2026-11",
        "amount": 50000,
    },
    "customer.churned": {"event_id": "e-cc", "type": "customer.churned", "occurred_at": T, "lead_id": "L1"},
}

#: Required fields per type beyond the common ``event_id``, ``type``, ``occurred_at`` (from the contract table).
REQUIRED: dict[str, tuple[str, ...]] = {
    "lead.created": ("lead_id",),
    "lead.assigned": ("lead_id", "rep_id"),
    "lead.qualified": ("lead_id",),
    "lead.converted": ("lead_id", "deal_id"),
    "deal.created": ("deal_id", "pipeline", "stage"),
    "deal.stage_changed": ("deal_id", "pipeline", "to_stage"),
    "deal.won": ("deal_id", "pipeline"),
    "deal.lost": ("deal_id", "pipeline"),
    "deal.updated": ("deal_id",),
    "call.logged": ("lead_id", "rep_id", "outcome"),
    "email.sent": ("lead_id", "rep_id", "email_id"),
    "email.opened": ("lead_id", "email_id"),
    "email.clicked": ("lead_id", "email_id"),
    "email.replied": ("lead_id", "email_id"),
    "email.bounced": ("lead_id", "email_id"),
    "meeting.booked": ("lead_id", "rep_id", "meeting_id"),
    "meeting.held": ("lead_id", "rep_id", "meeting_id"),
    "activity.logged": ("lead_id", "rep_id", "kind"),
    "quota.set": ("rep_id", "period", "amount"),
    "customer.churned": (),
}

MISSING_CASES = [
    (event_type, name) for event_type, names in REQUIRED.items() for name in ("event_id", "occurred_at", *names)
]


def example(event_type: str, **changes: Any) -> dict[str, Any]:
    """A copy of the minimal example of ``event_type`` with ``changes`` applied (``None`` removes a field)."""
    data = copy.deepcopy(EXAMPLES[event_type])
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def rejected_fields(item: Any) -> list[str]:
    """The ``field`` names of the 400 body ``parse_events`` answers for one event (asserting it is a 400)."""
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps(item))
    assert info.value.status == 400
    assert info.value.reason == "invalid_event"
    return [error["field"] for error in info.value.body["errors"]]


def errors_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        EventAdapter.validate_python(item)
    return indexed_field_errors(0, info.value)


# --- the examples -----------------------------------------------------------------------------------------------


def test_examples_cover_every_contract_type_exactly() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES) - INTERNAL_EVENT_TYPES
    assert len(EVENT_TYPES) == len(EVENT_MODELS) == 23


INTERNAL_EXAMPLES: dict[str, dict[str, Any]] = {
    "deal.lead_linked": {"deal_id": "D1", "lead_id": "L1"},
    "lead.deal_closed": {"lead_id": "L1", "deal_id": "D1", "pipeline": "sales", "outcome": "won", "amount": 5000},
    "rep.active": {"rep_id": "rep-1"},
}


@pytest.mark.parametrize("event_type", sorted(INTERNAL_EXAMPLES))
def test_internal_link_events_parse_from_kafka_but_webhooks_refuse_them(event_type: str) -> None:
    item = {"event_id": "x1", "type": event_type, "occurred_at": "2026-11-22T08:30:00Z", **INTERNAL_EXAMPLES[event_type]}
    event = event_from_json(orjson.dumps(item))
    assert event.type == event_type
    keyed_by = {"deal.lead_linked": "deal_id", "rep.active": "rep_id"}.get(event_type, "lead_id")
    assert event.partition_key == item[keyed_by]
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps([EXAMPLES["call.logged"], item]))
    assert [(e["index"], e["field"], e["type"]) for e in info.value.body["errors"]] == [(1, "type", "internal_type")]


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_minimal_example_of_each_type_validates_to_its_model(event_type: str) -> None:
    event = EventAdapter.validate_python(EXAMPLES[event_type])
    assert event.type == event_type
    assert event.event_id == EXAMPLES[event_type]["event_id"]
    assert event.occurred_at == datetime(2026, 11, 22, 8, 30, tzinfo=timezone.utc)
    # the same example passes the HTTP-level parser as an array of one
    assert [e.type for e in parse_events(orjson.dumps([EXAMPLES[event_type]]))] == [event_type]


def test_a_body_with_one_object_and_a_body_with_an_array_both_parse() -> None:
    assert len(parse_events(orjson.dumps(EXAMPLES["call.logged"]))) == 1
    assert len(parse_events(orjson.dumps(list(EXAMPLES.values())))) == len(EXAMPLES)


# --- required fields --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "name"), MISSING_CASES)
def test_missing_required_field_is_rejected_naming_it(event_type: str, name: str) -> None:
    errors = errors_of(example(event_type, **{name: None}))
    assert {"field": name, "type": "missing"}.items() <= errors[0].items()
    assert [e["field"] for e in errors] == [name]


def test_missing_fields_of_several_events_are_all_named_with_their_index() -> None:
    body = [EXAMPLES["email.opened"], example("call.logged", outcome=None), example("deal.created", stage=None)]
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps(body))
    assert [(e["index"], e["field"]) for e in info.value.body["errors"]] == [(1, "outcome"), (2, "stage")]


FULL_OPTIONALS: dict[str, dict[str, Any]] = {
    "lead.created": {"rep_id": "R1", "team": "north", "source": "google_ads", "mql": True},
    "lead.assigned": {"team": "north"},
    "deal.created": {
        "lead_id": "L1",
        "amount": 10.5,
        "currency": "EUR",
        "probability": 0.25,
        "kind": "upsell",
        "rep_id": "R1",
    },
    "deal.stage_changed": {"from_stage": "qualified", "amount": 0, "currency": "USD", "probability": 1},
    "deal.won": {"currency": "NOK"},
    "deal.lost": {"reason": "price"},
    "deal.updated": {"amount": 99, "probability": 0, "rep_id": "R2", "expected_close": "2027-01-31T00:00:00Z"},
    "call.logged": {"duration_s": 0, "team": "north"},
    "email.sent": {"personalized": False},
    "meeting.booked": {"kind": "first"},
    "activity.logged": {"outbound": True},
    "quota.set": {"currency": "USD"},
    "customer.churned": {"deal_id": "D1", "rep_id": "R1"},
}


@pytest.mark.parametrize("event_type", sorted(FULL_OPTIONALS))
def test_every_optional_contract_field_is_accepted(event_type: str) -> None:
    item = example(event_type, **FULL_OPTIONALS[event_type])
    event = EventAdapter.validate_python(item)
    for name in FULL_OPTIONALS[event_type]:
        assert getattr(event, name) is not None


# --- occurred_at ------------------------------------------------------------------------------------------------


def test_event_without_timezone_is_rejected_naming_occurred_at() -> None:
    errors = errors_of(example("call.logged", occurred_at="2026-11-22T09:30:00"))
    assert [(e["field"], e["type"]) for e in errors] == [("occurred_at", "timezone_aware")]


def test_event_without_timezone_is_a_400_naming_occurred_at() -> None:
    assert rejected_fields(example("lead.created", occurred_at="2026-11-22 09:30:00")) == ["occurred_at"]


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-11-22T09:30:00Z", datetime(2026, 11, 22, 9, 30, tzinfo=timezone.utc)),
        ("2026-11-22T09:30:00+05:45", datetime(2026, 11, 22, 3, 45, tzinfo=timezone.utc)),
        ("2026-11-22T09:30:00-08:00", datetime(2026, 11, 22, 17, 30, tzinfo=timezone.utc)),
        ("2026-11-22T09:30:00.123456+00:00", datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=timezone.utc)),
    ],
)
def test_occurred_at_with_offset_is_the_instant_it_names(value: str, utc: datetime) -> None:
    event = EventAdapter.validate_python(example("call.logged", occurred_at=value))
    assert event.occurred_at == utc
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "", "2026-11-31T00:00:00Z"])
def test_occurred_at_that_is_not_a_datetime_is_rejected_naming_occurred_at(value: str) -> None:
    assert rejected_fields(example("email.sent", occurred_at=value)) == ["occurred_at"]


# --- enums ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["connected", "no_answer", "voicemail", "busy", "unknown"])
def test_every_contract_call_outcome_is_accepted(outcome: str) -> None:
    assert EventAdapter.validate_python(example("call.logged", outcome=outcome)).outcome.value == outcome


@pytest.mark.parametrize("outcome", ["answered", "CONNECTED", "no-answer", ""])
def test_call_outcome_outside_the_enum_is_rejected_naming_outcome(outcome: str) -> None:
    errors = errors_of(example("call.logged", outcome=outcome))
    assert [(e["field"], e["type"]) for e in errors] == [("outcome", "enum")]


@pytest.mark.parametrize("kind", ["new", "upsell", "cross_sell"])
def test_every_contract_deal_kind_is_accepted(kind: str) -> None:
    assert EventAdapter.validate_python(example("deal.created", kind=kind)).kind.value == kind


@pytest.mark.parametrize("kind", ["renewal", "cross-sell", "New"])
def test_deal_kind_outside_the_enum_is_rejected_naming_kind(kind: str) -> None:
    assert rejected_fields(example("deal.created", kind=kind)) == ["kind"]


@pytest.mark.parametrize("event_type", ["meeting.booked", "meeting.held"])
@pytest.mark.parametrize("kind", ["first", "demo", "follow_up"])
def test_every_contract_meeting_kind_is_accepted(event_type: str, kind: str) -> None:
    assert EventAdapter.validate_python(example(event_type, kind=kind)).kind.value == kind


@pytest.mark.parametrize("event_type", ["meeting.booked", "meeting.held"])
@pytest.mark.parametrize("kind", ["lunch", "follow-up", "Demo"])
def test_meeting_kind_outside_the_enum_is_rejected_naming_kind(event_type: str, kind: str) -> None:
    assert rejected_fields(example(event_type, kind=kind)) == ["kind"]


def test_activity_logged_kind_is_free_text_not_an_enum() -> None:
    assert EventAdapter.validate_python(example("activity.logged", kind="LinkedIn message")).kind == "LinkedIn message"


# --- bounds -----------------------------------------------------------------------------------------------------


def test_event_id_of_128_characters_is_accepted() -> None:
    assert len(EventAdapter.validate_python(example("call.logged", event_id="x" * 128)).event_id) == 128


def test_event_id_over_128_characters_is_rejected_naming_event_id() -> None:
    errors = errors_of(example("call.logged", event_id="x" * 129))
    assert [(e["field"], e["type"]) for e in errors] == [("event_id", "string_too_long")]


@pytest.mark.parametrize(
    ("event_type", "name", "value"),
    [
        ("call.logged", "lead_id", "l" * 129),
        ("call.logged", "rep_id", "r" * 129),
        ("email.sent", "email_id", "m" * 129),
        ("meeting.booked", "meeting_id", "g" * 129),
        ("deal.created", "pipeline", "p" * 65),
        ("deal.created", "stage", "s" * 65),
        ("lead.created", "team", "t" * 65),
        ("lead.created", "source", "s" * 65),
        ("activity.logged", "kind", "k" * 65),
        ("deal.lost", "reason", "r" * 257),
    ],
)
def test_string_over_its_bound_is_rejected_naming_the_field(event_type: str, name: str, value: str) -> None:
    errors = errors_of(example(event_type, **{name: value}))
    assert [(e["field"], e["type"]) for e in errors] == [(name, "string_too_long")]


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_or_blank_event_id_is_rejected_naming_event_id(value: str) -> None:
    assert rejected_fields(example("call.logged", event_id=value)) == ["event_id"]


@pytest.mark.parametrize(
    ("event_type", "name", "value"),
    [
        ("deal.won", "amount", -1),
        ("deal.won", "amount", "NaN"),
        ("deal.won", "currency", "usd"),
        ("deal.created", "probability", 1.5),
        ("quota.set", "period", "2026-13"),
        ("quota.set", "period", "2026-1"),
        ("call.logged", "duration_s", -5),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(event_type: str, name: str, value: Any) -> None:
    assert rejected_fields(example(event_type, **{name: value})) == [name]


# --- type and extra fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["call.made", "lead", "Call.Logged", ""])
def test_unknown_type_is_rejected_naming_type(event_type: str) -> None:
    assert rejected_fields(example("call.logged", type=event_type)) == ["type"]


def test_event_without_type_is_rejected_naming_type() -> None:
    assert rejected_fields(example("call.logged", type=None)) == ["type"]


def test_a_bad_event_in_an_array_rejects_the_whole_request() -> None:
    body = [EXAMPLES["call.logged"], example("email.sent", type="email.sent_v2"), EXAMPLES["lead.created"]]
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps(body))
    assert info.value.body["errors"][0]["index"] == 1
    assert info.value.body["errors"][0]["field"] == "type"
    assert "nothing was accepted" in info.value.body["error"]


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_unknown_extra_field_is_rejected_naming_it(event_type: str) -> None:
    errors = errors_of(example(event_type, colour="blue"))
    assert [(e["field"], e["type"]) for e in errors] == [("colour", "extra_forbidden")]


def test_field_of_another_type_is_an_extra_field() -> None:
    # ``outcome`` belongs to call.logged; an email.sent carrying it is malformed, not silently accepted
    assert rejected_fields(example("email.sent", outcome="connected")) == ["outcome"]


def test_non_object_array_item_is_rejected_with_its_index() -> None:
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps([EXAMPLES["call.logged"], "call.logged"]))
    assert [e["index"] for e in info.value.body["errors"]] == [1]


# --- customer.churned -------------------------------------------------------------------------------------------


def test_customer_churned_with_neither_lead_nor_deal_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        EventAdapter.validate_python(example("customer.churned", lead_id=None))
    assert "lead_id or deal_id" in str(info.value)
    with pytest.raises(RejectedRequest):
        parse_events(orjson.dumps(example("customer.churned", lead_id=None, rep_id="R1")))


@pytest.mark.parametrize(
    "ids", [{"lead_id": "L9"}, {"deal_id": "D9"}, {"lead_id": "L9", "deal_id": "D9"}], ids=["lead", "deal", "both"]
)
def test_customer_churned_with_lead_or_deal_is_accepted(ids: dict[str, str]) -> None:
    event = EventAdapter.validate_python(example("customer.churned", lead_id=None) | ids)
    assert isinstance(event, CustomerChurned)
    assert (event.lead_id, event.deal_id) == (ids.get("lead_id"), ids.get("deal_id"))


# --- partition key ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "key"),
    [
        (EXAMPLES["call.logged"], "L1"),
        (EXAMPLES["lead.converted"], "L1"),  # lead and deal: the lead
        (example("deal.created", lead_id="L7"), "D1"),  # deal events by deal: one partition per deal
        (EXAMPLES["deal.created"], "D1"),
        (example("deal.updated", rep_id="R3"), "D1"),  # deal before rep
        (EXAMPLES["deal.won"], "D1"),
        (EXAMPLES["quota.set"], "R1"),  # no lead, no deal: the rep
        (example("customer.churned", lead_id=None, deal_id="D5", rep_id="R5"), "D5"),
        (example("customer.churned", deal_id="D5"), "L1"),
    ],
)
def test_partition_key_is_the_deal_for_deal_events_else_lead_else_deal_else_rep(item: dict[str, Any], key: str) -> None:
    assert EventAdapter.validate_python(item).partition_key == key


# --- JSON round trip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_event_to_json_round_trips_through_event_from_json(event_type: str) -> None:
    event = EventAdapter.validate_python(EXAMPLES[event_type])
    again = event_from_json(event_to_json(event))
    assert again == event
    assert type(again) is type(event)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_event_to_json_omits_unset_optional_fields(event_type: str) -> None:
    event = EventAdapter.validate_python(EXAMPLES[event_type])
    written = orjson.loads(event_to_json(event))
    assert None not in written.values()
    assert set(written) == set(EXAMPLES[event_type])


def test_event_to_json_keeps_set_optional_fields_and_the_offset() -> None:
    event = EventAdapter.validate_python(
        example("call.logged", occurred_at="2026-11-22T09:30:00+05:45", team="north", duration_s=42.5)
    )
    written = orjson.loads(event_to_json(event))
    assert written["team"] == "north"
    assert written["duration_s"] == 42.5
    assert written["occurred_at"] == "2026-11-22T09:30:00+05:45"
    assert "source" not in written


def test_event_from_json_raises_naming_the_bad_field() -> None:
    with pytest.raises(ValidationError) as info:
        event_from_json(orjson.dumps(example("call.logged", rep_id=None)))
    assert [e["field"] for e in indexed_field_errors(0, info.value)] == ["rep_id"]


_id_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=128
).filter(lambda s: s.strip() == s and s != "")
_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_aware = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=_offsets)


@st.composite
def _activity_events(draw: st.DrawFn) -> CallLogged | EmailSent:
    common = {
        "event_id": draw(_id_text),
        "occurred_at": draw(_aware),
        "lead_id": draw(_id_text),
        "rep_id": draw(_id_text),
    }
    if draw(st.booleans()):
        return CallLogged(
            type="call.logged",
            outcome=draw(st.sampled_from(["connected", "no_answer", "voicemail", "busy", "unknown"])),
            duration_s=draw(st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)),
            **common,
        )
    return EmailSent(
        type="email.sent", email_id=draw(_id_text), personalized=draw(st.none() | st.booleans()), **common
    )


@settings(max_examples=300, deadline=None)
@given(_activity_events())
def test_call_and_email_events_round_trip_with_any_valid_ids_and_aware_times(event: CallLogged | EmailSent) -> None:
    raw = event_to_json(event)
    again = event_from_json(raw)
    assert again == event
    assert again.occurred_at.utcoffset() == event.occurred_at.utcoffset()
    assert None not in orjson.loads(raw).values()
    assert again.partition_key == event.lead_id


@pytest.mark.parametrize(
    ("event_type", "name", "value"),
    [("deal.won", "amount", 1e300), ("deal.created", "amount", 2e15), ("quota.set", "amount", 1e16),
     ("call.logged", "duration_s", 1e9)],
)
def test_amounts_and_durations_too_large_to_sum_are_rejected_naming_the_field(
    event_type: str, name: str, value: float
) -> None:
    with pytest.raises(RejectedRequest) as info:
        parse_events(orjson.dumps([example(event_type, **{name: value})]))
    assert [(e["index"], e["field"]) for e in info.value.body["errors"]] == [(0, name)]


# --- strict where the contract is (issue 11, finding 5) ---------------------------------------------------------


@pytest.mark.parametrize("field", ["amount", "probability"])
def test_a_boolean_is_not_a_number_for_amount_or_probability(field: str) -> None:
    errors = errors_of(example("deal.created", **{field: True}))
    assert [e["field"] for e in errors] == [field]
    assert "boolean" in errors[0]["message"]


def test_a_boolean_is_not_a_call_duration() -> None:
    assert [e["field"] for e in errors_of(example("call.logged", duration_s=True))] == ["duration_s"]


@pytest.mark.parametrize("value", [1764000000, 1764000000.5, "1764000000", "22/11/2026 09:30", True])
def test_occurred_at_must_be_rfc3339_text_not_epoch_seconds(value: Any) -> None:
    errors = errors_of(example("lead.created", occurred_at=value))
    assert [e["field"] for e in errors] == ["occurred_at"]
    assert "RFC 3339" in errors[0]["message"]


@pytest.mark.parametrize("value", ["2026-11-22T09:30:00Z", "2026-11-22T09:30:00.123+05:30", "2026-11-22 09:30:00-08:00"])
def test_occurred_at_in_rfc3339_with_an_offset_is_accepted(value: str) -> None:
    assert EventAdapter.validate_python(example("lead.created", occurred_at=value)).occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        ("deal.created", "stage"),
        ("deal.created", "pipeline"),
        ("deal.created", "deal_id"),
        ("lead.created", "event_id"),
        ("lead.created", "team"),
        ("lead.created", "source"),
        ("lead.created", "rep_id"),
        ("deal.lost", "reason"),
        ("activity.logged", "kind"),
    ],
)
@pytest.mark.parametrize("char", ["\t", "\n", "\x00", "\x1b", "\x7f"])
def test_control_characters_in_ids_and_names_are_refused_naming_the_field(event_type: str, field: str, char: str) -> None:
    errors = errors_of(example(event_type, **{field: f"new{char}lead"}))
    assert [e["field"] for e in errors] == [field]
    assert "control characters" in errors[0]["message"]


def test_a_request_repeating_an_event_id_accepts_it_once() -> None:
    item = example("lead.created")
    events = parse_events(orjson.dumps([item, item, {**item, "lead_id": "L2"}, example("lead.assigned")]))
    assert [e.event_id for e in events] == ["e-lc", "e-la"]
    assert events[0].lead_id == "L1"  # the first occurrence wins, as across requests
