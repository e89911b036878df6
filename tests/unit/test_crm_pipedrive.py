"""Pipedrive v1 and v2 bodies in the documented shapes normalise to the expected canonical events."""

from __future__ import annotations

import orjson
import pytest

from salespulse.crm_config import StageMapping, VendorMapping
from salespulse.handlers.crm.common import Unnormalisable
from salespulse.handlers.crm.pipedrive import normalise_pipedrive
from tests.unit.crm_helpers import canon

MAPPING = VendorMapping(
    pipelines={"1": "smb"},
    stages={"2": StageMapping(pipeline="smb", stage="qualified"), "3": StageMapping(pipeline="smb", stage="proposal",
                                                                                   probability=0.5)},
    owners={"42": "rep-bo"},
)


def v2(action: str, entity: str, data: dict, previous: dict | None = None, meta_id: str = "5c7c1f7e-0001") -> dict:
    return {"meta": {"action": action, "entity": entity, "id": meta_id, "entity_id": str(data.get("id")),
                     "company_id": "123", "user_id": "42", "timestamp": "2026-01-10T10:00:05.000Z", "version": "2.0",
                     "attempt": 1, "host": "acme.pipedrive.com", "change_source": "app"},
            "data": data, "previous": previous}


def v1(event: str, current: dict, previous: dict | None = None, micro: int = 1768039205123456) -> dict:
    action, obj = event.split(".")
    return {"v": 1, "matches_filters": {"current": []}, "retry": 0, "event": event,
            "meta": {"v": 1, "action": action, "object": obj, "id": current["id"], "company_id": 123, "user_id": 42,
                     "host": "acme.pipedrive.com", "timestamp": 1768039205, "timestamp_micro": micro,
                     "permitted_user_ids": [42], "trans_pending": False, "is_bulk_update": False},
            "current": current, "previous": previous}


DEAL = {"id": 7, "title": "Acme", "value": 1000, "currency": "EUR", "status": "open", "stage_id": 3, "pipeline_id": 1,
        "owner_id": 42, "person_id": 11, "add_time": "2026-01-09T08:00:00Z", "update_time": "2026-01-10T10:00:00Z",
        "stage_change_time": "2026-01-10T10:00:00Z"}


def run(body: dict) -> tuple[list[dict], list[str]]:
    result = normalise_pipedrive(orjson.dumps(body), MAPPING)
    return canon(result.events), result.ignored


def test_v2_stage_change_uses_previous_for_from_stage_and_meta_id_for_the_event_id() -> None:
    events, ignored = run(v2("change", "deal", DEAL, {"stage_id": 2}))
    assert events == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "deal.stage_changed",
                       "occurred_at": "2026-01-10T10:00:00Z", "deal_id": "7", "rep_id": "rep-bo", "pipeline": "smb",
                       "from_stage": "qualified", "to_stage": "proposal", "amount": 1000.0, "currency": "EUR",
                       "probability": 0.5}]
    assert ignored == []


def test_v2_won_and_lost_come_from_status_with_amount_and_lost_reason() -> None:
    won, _ = run(v2("change", "deal", {**DEAL, "status": "won", "won_time": "2026-01-11T09:00:00Z"}, {"status": "open"}))
    lost, _ = run(v2("change", "deal", {**DEAL, "status": "lost", "lost_reason": "budget",
                                        "lost_time": "2026-01-11T09:30:00Z"}, {"status": "open"}))
    assert won == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "deal.won", "occurred_at": "2026-01-11T09:00:00Z",
                    "deal_id": "7", "rep_id": "rep-bo", "pipeline": "smb", "amount": 1000.0, "currency": "EUR"}]
    assert lost[0]["type"] == "deal.lost" and lost[0]["reason"] == "budget"


def test_v2_deal_added_is_created_in_its_mapped_stage() -> None:
    events, _ = run(v2("create", "deal", {**DEAL, "probability": 30}))
    assert events == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "deal.created",
                       "occurred_at": "2026-01-09T08:00:00Z", "deal_id": "7", "rep_id": "rep-bo", "pipeline": "smb",
                       "stage": "proposal", "amount": 1000.0, "currency": "EUR", "probability": 0.3}]


def test_v2_value_and_owner_changes_are_deal_updates() -> None:
    events, _ = run(v2("change", "deal", {**DEAL, "value": 2500, "owner_id": 43}, {"value": 1000, "owner_id": 42}))
    assert events == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "deal.updated",
                       "occurred_at": "2026-01-10T10:00:00Z", "deal_id": "7", "rep_id": "43", "amount": 2500.0}]


def test_v1_dates_without_a_zone_are_utc_and_the_event_id_is_stable_across_retries() -> None:
    body = v1("updated.deal", {**DEAL, "status": "won", "user_id": 42, "won_time": "2026-01-11 09:00:00",
                               "update_time": "2026-01-11 09:00:00"}, {**DEAL, "status": "open"})
    events, _ = run(body)
    assert events[0]["event_id"] == "pipedrive:v1:deal:7:updated:1768039205123456"
    assert events[0]["occurred_at"] == "2026-01-11T09:00:00Z" and events[0]["type"] == "deal.won"
    assert run({**body, "retry": 2})[0] == events


def test_v1_stage_change_compares_current_with_previous() -> None:
    same_stage, ignored = run(v1("updated.deal", DEAL, {**DEAL, "title": "Acme Inc"}))
    moved, _ = run(v1("updated.deal", DEAL, {**DEAL, "stage_id": 2}))
    assert same_stage == [] and ignored == ["deal.change"]
    assert [(e["type"], e["from_stage"], e["to_stage"]) for e in moved] == [("deal.stage_changed", "qualified", "proposal")]


def test_activities_count_when_done_and_meetings_when_booked_and_held() -> None:
    call = {"id": 5, "type": "call", "done": True, "person_id": 11, "owner_id": 42, "duration": "00:05",
            "marked_as_done_time": "2026-01-10T10:00:00Z"}
    booked, _ = run(v2("create", "activity", {**call, "type": "meeting", "done": False,
                                              "add_time": "2026-01-10T09:00:00Z"}))
    held, _ = run(v2("change", "activity", {**call, "type": "meeting"}, {"done": False}))
    logged, _ = run(v2("create", "activity", call))
    scheduled, ignored = run(v2("create", "activity", {**call, "done": False}))
    email, _ = run(v1("added.activity", {**call, "type": "email", "user_id": 42, "owner_id": None,
                                         "marked_as_done_time": "2026-01-10 10:00:00"}))
    visit, _ = run(v2("change", "activity", {**call, "type": "visit"}, {"done": False}))
    assert [e["type"] for e in booked + held] == ["meeting.booked", "meeting.held"]
    assert logged == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "call.logged", "occurred_at": "2026-01-10T10:00:00Z",
                       "lead_id": "11", "rep_id": "rep-bo", "outcome": "unknown", "duration_s": 300.0}]
    assert scheduled == [] and ignored == ["activity.create"]
    assert email[0]["type"] == "email.sent" and email[0]["email_id"] == "5"
    assert visit[0]["type"] == "activity.logged" and visit[0]["kind"] == "visit"


def test_persons_are_leads_created_and_assigned() -> None:
    person = {"id": 11, "owner_id": 42, "add_time": "2026-01-09T08:00:00Z", "update_time": "2026-01-10T08:00:00Z"}
    created, _ = run(v2("create", "person", person))
    assigned, _ = run(v2("change", "person", {**person, "owner_id": 43}, {"owner_id": 42}))
    assert created == [{"event_id": "pipedrive:5c7c1f7e-0001", "type": "lead.created",
                        "occurred_at": "2026-01-09T08:00:00Z", "lead_id": "11", "rep_id": "rep-bo"}]
    assert assigned[0]["type"] == "lead.assigned" and assigned[0]["rep_id"] == "43"


def test_unknown_entities_and_deletions_are_ignored() -> None:
    assert run(v2("delete", "deal", DEAL)) == ([], ["deal.delete"])
    assert run(v2("create", "project", {"id": 1})) == ([], ["project.create"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {}}, "meta"),
        (v2("change", "deal", {**DEAL, "value": "a lot"}, {"value": 1}), "data.value"),
        (v2("create", "deal", {**DEAL, "stage_id": None}), "data.stage_id"),
        (v2("change", "deal", {**DEAL, "update_time": "tuesday"}, {"value": 1}), "data.update_time"),
        ({**v2("create", "deal", DEAL), "data": [1]}, "data"),
    ],
)
def test_a_payload_that_cannot_be_normalised_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(Unnormalisable) as info:
        normalise_pipedrive(orjson.dumps(body), MAPPING)
    assert info.value.errors[0]["field"] == field
