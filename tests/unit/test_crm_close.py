"""Close webhooks in the documented shape normalise to the expected canonical events."""

from __future__ import annotations

import orjson
import pytest

from salespulse.crm_config import StageMapping, VendorMapping
from salespulse.handlers.crm.close import normalise_close
from salespulse.handlers.crm.common import Unnormalisable
from tests.unit.crm_helpers import canon

MAPPING = VendorMapping(owners={"user_N6": "rep-joe"},
                        stages={"stat_demo": StageMapping(pipeline="sales", stage="demo", probability=0.4)})


def close(object_type: str, action: str, data: dict, previous: dict | None = None, changed: list | None = None,
          ev_id: str = "ev_2sYKRjcrA79yKxi3S4Crd7") -> dict:
    return {"subscription_id": "whsub_1", "event": {
        "id": ev_id, "date_created": "2019-01-15T12:48:23.395000", "date_updated": "2019-01-15T12:48:23.395000",
        "organization_id": "orga_X", "user_id": "user_N6", "request_id": "req_1", "object_type": object_type,
        "object_id": data.get("id"), "lead_id": data.get("lead_id"), "action": action, "changed_fields": changed or [],
        "meta": {"request_method": "PUT"}, "data": data, "previous_data": previous or {}}}


OPP = {"id": "oppo_8H", "lead_id": "lead_1", "user_id": "user_N6", "status_id": "stat_demo", "status_label": "Demo",
       "status_type": "active", "value": 100000, "value_currency": "USD", "confidence": 40, "value_period": "one_time"}


def run(body: dict) -> tuple[list[dict], list[str]]:
    result = normalise_close(orjson.dumps(body), MAPPING)
    return canon(result.events), result.ignored


def test_the_documented_won_opportunity_is_won_with_its_value_in_currency_units() -> None:
    data = {**OPP, "status_id": "stat_won", "status_label": "Won", "status_type": "won", "confidence": 100}
    previous = {"status_type": "active", "confidence": 70, "status_id": "stat_demo", "status_label": "Demo"}
    events, _ = run(close("opportunity", "updated", data, previous,
                          ["confidence", "date_updated", "status_id", "status_label", "status_type"]))
    assert events == [{"event_id": "close:ev_2sYKRjcrA79yKxi3S4Crd7", "type": "deal.won",
                       "occurred_at": "2019-01-15T12:48:23.395000Z", "deal_id": "oppo_8H", "rep_id": "rep-joe",
                       "pipeline": "default", "amount": 1000.0, "currency": "USD"}]


def test_a_new_opportunity_creates_the_deal_and_converts_its_lead() -> None:
    events, _ = run(close("opportunity", "created", OPP))
    assert events == [
        {"event_id": "close:ev_2sYKRjcrA79yKxi3S4Crd7", "type": "deal.created", "occurred_at": "2019-01-15T12:48:23.395000Z",
         "deal_id": "oppo_8H", "lead_id": "lead_1", "rep_id": "rep-joe", "pipeline": "sales", "stage": "demo",
         "amount": 1000.0, "currency": "USD", "probability": 0.4},
        {"event_id": "close:ev_2sYKRjcrA79yKxi3S4Crd7:converted", "type": "lead.converted",
         "occurred_at": "2019-01-15T12:48:23.395000Z", "lead_id": "lead_1", "deal_id": "oppo_8H"},
    ]


def test_a_status_change_between_active_statuses_is_a_stage_change() -> None:
    data = {**OPP, "status_id": "stat_prop", "status_label": "Proposal"}
    events, _ = run(close("opportunity", "updated", data, {"status_id": "stat_demo", "status_label": "Demo"},
                          ["status_id", "status_label"]))
    assert [(e["type"], e["from_stage"], e["to_stage"]) for e in events] == [("deal.stage_changed", "demo", "Proposal")]


def test_calls_emails_and_meetings_become_activities() -> None:
    call, _ = run(close("activity.call", "created", {"id": "acti_1", "lead_id": "lead_1", "user_id": "user_N6",
                                                     "direction": "outbound", "disposition": "vm-left", "duration": 42}))
    unknown, _ = run(close("activity.call", "created", {"id": "acti_2", "lead_id": "lead_1", "user_id": "user_N6"}))
    draft, ignored = run(close("activity.email", "created", {"id": "acti_3", "lead_id": "lead_1", "user_id": "user_N6",
                                                              "direction": "outgoing", "status": "draft"}))
    sent, _ = run(close("activity.email", "updated", {"id": "acti_3", "lead_id": "lead_1", "user_id": "user_N6",
                                                      "direction": "outgoing", "status": "sent"},
                        {"status": "outbox"}, ["status"]))
    booked, _ = run(close("activity.meeting", "created", {"id": "acti_4", "lead_id": "lead_1", "user_id": "user_N6"}))
    held, _ = run(close("activity.meeting", "updated", {"id": "acti_4", "lead_id": "lead_1", "user_id": "user_N6",
                                                       "status": "completed"}, {"status": "upcoming"}, ["status"]))
    assert call == [{"event_id": "close:ev_2sYKRjcrA79yKxi3S4Crd7", "type": "call.logged",
                     "occurred_at": "2019-01-15T12:48:23.395000Z", "lead_id": "lead_1", "rep_id": "rep-joe",
                     "outcome": "voicemail", "duration_s": 42.0}]
    assert unknown[0]["outcome"] == "unknown"
    assert draft == [] and ignored == ["activity.email.created"]
    assert sent[0]["type"] == "email.sent" and sent[0]["email_id"] == "acti_3"
    assert [e["type"] for e in booked + held] == ["meeting.booked", "meeting.held"]


def test_new_leads_are_created_and_other_objects_ignored() -> None:
    assert run(close("lead", "created", {"id": "lead_9"}))[0][0]["type"] == "lead.created"
    assert run(close("contact", "created", {"id": "cont_1"})) == ([], ["contact.created"])
    assert run(close("opportunity", "deleted", OPP)) == ([], ["opportunity.deleted"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subscription_id": "x"}, "event"),
        ({"event": {**close("lead", "created", {"id": "l"})["event"], "date_created": 5}}, "event.date_created"),
        (close("opportunity", "created", {**OPP, "value": "much"}), "event.data.value"),
        (close("opportunity", "created", {**OPP, "status_id": None}), "event.data.status_id"),
    ],
)
def test_a_payload_that_cannot_be_normalised_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(Unnormalisable) as info:
        normalise_close(orjson.dumps(body), MAPPING)
    assert info.value.errors[0]["field"] == field
