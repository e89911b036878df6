"""HubSpot batches in the documented shape normalise to the expected canonical events."""

from __future__ import annotations

import orjson
import pytest

from salespulse.crm_config import HubSpotMapping, StageMapping
from salespulse.handlers.crm.common import Unnormalisable
from salespulse.handlers.crm.hubspot import normalise_hubspot
from tests.unit.crm_helpers import canon

T0 = 1767225600000  # 2026-01-01T00:00:00Z in epoch ms
MAPPING = HubSpotMapping(
    owners={"5001": "rep-anna"},
    stages={
        "1101": StageMapping(pipeline="enterprise", stage="discovery", probability=0.1),
        "1102": StageMapping(pipeline="enterprise", stage="signed", closed=True, won=True),
        "1103": StageMapping(pipeline="enterprise", stage="Closed Won (no!)", closed=True, won=False),
    },
)


def hs(event_id: int, subscription: str, object_id: int, at: int = T0, **extra: object) -> dict:
    return {"eventId": event_id, "subscriptionId": 77, "portalId": 62515, "appId": 54321, "occurredAt": at,
            "subscriptionType": subscription, "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM", **extra}


def prop(event_id: int, subscription: str, object_id: int, name: str, value: str, at: int = T0) -> dict:
    return hs(event_id, subscription, object_id, at, propertyName=name, propertyValue=value)


def run(batch: list[dict], mapping: HubSpotMapping = MAPPING) -> tuple[list[dict], list[str]]:
    result = normalise_hubspot(orjson.dumps(batch), mapping)
    return canon(result.events), result.ignored


def test_a_mixed_batch_normalises_contacts_owners_lifecycle_and_deals() -> None:
    events, ignored = run([
        hs(1, "contact.creation", 101),
        prop(2, "contact.propertyChange", 101, "hubspot_owner_id", "5001", T0 + 1000),
        prop(3, "contact.propertyChange", 101, "lifecyclestage", "marketingqualifiedlead", T0 + 2000),
        prop(4, "deal.propertyChange", 900, "dealstage", "1101", T0 + 3000),
        prop(5, "deal.propertyChange", 900, "amount", "12500.50", T0 + 4000),
        prop(6, "deal.propertyChange", 900, "hubspot_owner_id", "6002", T0 + 5000),
        prop(7, "contact.propertyChange", 101, "firstname", "Ada", T0 + 6000),
    ])
    assert events == [
        {"event_id": "hubspot:1", "type": "lead.created", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "101"},
        {"event_id": "hubspot:2", "type": "lead.assigned", "occurred_at": "2026-01-01T00:00:01Z", "lead_id": "101",
         "rep_id": "rep-anna"},
        {"event_id": "hubspot:3", "type": "lead.qualified", "occurred_at": "2026-01-01T00:00:02Z", "lead_id": "101"},
        {"event_id": "hubspot:4", "type": "deal.stage_changed", "occurred_at": "2026-01-01T00:00:03Z", "deal_id": "900",
         "pipeline": "enterprise", "to_stage": "discovery", "probability": 0.1},
        {"event_id": "hubspot:5", "type": "deal.updated", "occurred_at": "2026-01-01T00:00:04Z", "deal_id": "900",
         "amount": 12500.5},
        {"event_id": "hubspot:6", "type": "deal.updated", "occurred_at": "2026-01-01T00:00:05Z", "deal_id": "900",
         "rep_id": "6002"},
    ]
    assert ignored == ["contact.propertyChange:firstname"]


def test_won_and_lost_come_from_the_mapped_stage_flags_not_the_stage_name() -> None:
    events, _ = run([
        prop(10, "deal.propertyChange", 1, "dealstage", "1102"),
        prop(11, "deal.propertyChange", 2, "dealstage", "1103"),
        prop(12, "deal.propertyChange", 3, "dealstage", "closedlost"),  # HubSpot's default pipeline, built in
        prop(13, "deal.propertyChange", 4, "dealstage", "77777"),  # unmapped: open, named by its id
    ])
    assert [(e["type"], e.get("pipeline"), e.get("to_stage")) for e in events] == [
        ("deal.won", "enterprise", None),
        ("deal.lost", "enterprise", None),
        ("deal.lost", "default", None),
        ("deal.stage_changed", "default", "77777"),
    ]
    assert "amount" not in events[0]  # thin payload: the worker's deal state fills the amount


def test_a_deal_created_in_the_batch_takes_its_initial_stage_amount_and_owner() -> None:
    events, ignored = run([
        hs(20, "deal.creation", 55),
        prop(21, "deal.propertyChange", 55, "dealstage", "1101"),
        prop(22, "deal.propertyChange", 55, "amount", "900"),
        prop(23, "deal.propertyChange", 55, "hubspot_owner_id", "5001"),
        hs(24, "deal.creation", 56),  # no stage in this batch: the deal enters with its first stage change
    ])
    assert events == [
        {"event_id": "hubspot:20", "type": "deal.created", "occurred_at": "2026-01-01T00:00:00Z", "deal_id": "55",
         "pipeline": "enterprise", "stage": "discovery", "amount": 900.0, "probability": 0.1, "rep_id": "rep-anna"},
    ]
    assert ignored == ["deal.creation:no_stage"]


def test_a_deal_created_straight_into_a_won_stage_is_created_then_won() -> None:
    events, _ = run([hs(30, "deal.creation", 57), prop(31, "deal.propertyChange", 57, "dealstage", "1102")])
    assert [(e["event_id"], e["type"]) for e in events] == [("hubspot:30", "deal.created"), ("hubspot:30:won", "deal.won")]


def test_object_subscriptions_of_the_new_platform_map_by_object_type_id() -> None:
    events, ignored = run([
        hs(40, "object.creation", 102, objectTypeId="0-1"),
        {**prop(41, "object.propertyChange", 901, "dealstage", "1101"), "objectTypeId": "0-3"},
        hs(42, "object.creation", 5, objectTypeId="0-48"),  # a call: no lead or owner in the payload
    ])
    assert [e["type"] for e in events] == ["lead.created", "deal.stage_changed"]
    assert ignored == ["call.creation"]


def test_contact_deal_association_converts_the_lead_once_for_both_directions() -> None:
    events, ignored = run([
        hs(50, "contact.associationChange", 0, associationType="CONTACT_TO_DEAL", fromObjectId=101, toObjectId=900,
           associationRemoved=False),
        hs(51, "deal.associationChange", 0, associationType="DEAL_TO_CONTACT", fromObjectId=900, toObjectId=101,
           associationRemoved=False),
        hs(52, "contact.associationChange", 0, associationType="CONTACT_TO_COMPANY", fromObjectId=101, toObjectId=3),
    ])
    assert {e["event_id"] for e in events} == {"hubspot:association:101:900"}
    assert all(e["type"] == "lead.converted" and e["lead_id"] == "101" and e["deal_id"] == "900" for e in events)
    assert ignored == ["contact.associationChange:CONTACT_TO_COMPANY"]


def test_lifecycle_stages_follow_the_mapping_and_conversion_without_a_deal_is_ignored() -> None:
    mapping = HubSpotMapping(contact_creation_is_lead=False, lifecycle={"lead": "lead.created",
                                                                       "customer": "lead.converted"})
    events, ignored = run([
        hs(60, "contact.creation", 7),
        prop(61, "contact.propertyChange", 7, "lifecyclestage", "lead"),
        prop(62, "contact.propertyChange", 7, "lifecyclestage", "customer"),
        prop(63, "contact.propertyChange", 7, "lifecyclestage", "evangelist"),
    ], mapping)
    assert [(e["event_id"], e["type"]) for e in events] == [("hubspot:61", "lead.created")]
    assert ignored == ["contact.creation", "contact.lifecyclestage:converted_without_deal",
                       "contact.lifecyclestage:evangelist"]


def test_a_retried_batch_gives_the_same_event_ids_so_the_worker_counts_it_once() -> None:
    batch = [hs(70, "contact.creation", 8), prop(71, "deal.propertyChange", 9, "dealstage", "1101")]
    retry = [{**item, "attemptNumber": 3} for item in batch]
    assert run(batch) == run(retry)


def test_out_of_order_events_keep_their_own_times() -> None:
    events, _ = run([
        prop(81, "deal.propertyChange", 10, "dealstage", "1102", T0 + 60_000),
        prop(80, "deal.propertyChange", 10, "dealstage", "1101", T0),
        hs(82, "contact.propertyChange", 11, T0 + 5000, propertyName="hubspot_owner_id", propertyValue="5001"),
        hs(83, "contact.creation", 11, T0),
    ])
    assert [(e["event_id"], e["occurred_at"]) for e in events] == [
        ("hubspot:81", "2026-01-01T00:01:00Z"), ("hubspot:80", "2026-01-01T00:00:00Z"),
        ("hubspot:82", "2026-01-01T00:00:05Z"), ("hubspot:83", "2026-01-01T00:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"eventId": 1}', ""),
        (b"not json", ""),
        (orjson.dumps([hs(1, "contact.creation", 1), {"eventId": 2}]), "[1].occurredAt"),
        (orjson.dumps([hs(1, "contact.creation", 1, at="yesterday")]), "[0].occurredAt"),
        (orjson.dumps([prop(1, "deal.propertyChange", 1, "amount", "lots")]), "[0].propertyValue"),
        (orjson.dumps([{**hs(1, "contact.creation", 1), "objectId": None}]), "[0].objectId"),
        (orjson.dumps([hs(1, "object.creation", 1)]), "[0].objectTypeId"),
    ],
)
def test_a_payload_that_cannot_be_normalised_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(Unnormalisable) as info:
        normalise_hubspot(body, MAPPING)
    assert info.value.errors[0]["field"] == field
