"""Salesforce outbound messages (SOAP) and CDC events normalise to the expected canonical events."""

from __future__ import annotations

import orjson
import pytest

from salespulse.crm_config import StageMapping, VendorMapping
from salespulse.handlers.crm.common import Unnormalisable
from salespulse.handlers.crm.salesforce import WrongOrganization, normalise_cdc, normalise_outbound
from tests.unit.crm_helpers import canon

ORG = "00D000000000062EAA"
MAPPING = VendorMapping(owners={"005000000000001AAA": "rep-sam"}, pipeline="sales",
                        stages={"Negotiation": StageMapping(pipeline="sales", stage="negotiation", probability=0.8)})


def sobject(kind: str, fields: dict[str, str]) -> str:
    inner = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
    return f'<sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{inner}</sObject>'


def outbound(*notifications: tuple[str, str, dict[str, str]], org: str = ORG) -> bytes:
    body = "".join(f"<Notification><Id>{nid}</Id>{sobject(kind, f)}</Notification>" for nid, kind, f in notifications)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>"
        '<SessionId xsi:nil="true"/><EnterpriseUrl>https://x.my.salesforce.com/services/Soap/c/60.0</EnterpriseUrl>'
        "<PartnerUrl>https://x.my.salesforce.com/services/Soap/u/60.0</PartnerUrl>"
        f"{body}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


OPP = {"Id": "006000000000001AAA", "Amount": "5000.0", "CreatedDate": "2026-01-10T09:00:00.000Z",
       "LastModifiedDate": "2026-01-10T09:00:00.000Z", "IsClosed": "false", "IsWon": "false",
       "OwnerId": "005000000000001AAA", "Probability": "10.0", "StageName": "Prospecting"}


def test_a_batch_of_notifications_normalises_each_snapshot() -> None:
    body = outbound(
        ("04l000000000001AAA", "Opportunity", OPP),
        ("04l000000000002AAA", "Opportunity", {**OPP, "LastModifiedDate": "2026-01-12T09:00:00.000Z",
                                               "StageName": "Negotiation"}),
        ("04l000000000003AAA", "Opportunity", {**OPP, "LastModifiedDate": "2026-01-13T09:00:00.000Z",
                                               "StageName": "Closed Won", "IsClosed": "true", "IsWon": "true"}),
        ("04l000000000004AAA", "Lead", {"Id": "00Q000000000001AAA", "CreatedDate": "2026-01-09T09:00:00.000Z",
                                        "LastModifiedDate": "2026-01-09T09:00:00.000Z", "LeadSource": "Web",
                                        "OwnerId": "005000000000001AAA"}),
        ("04l000000000005AAA", "Lead", {"Id": "00Q000000000001AAA", "CreatedDate": "2026-01-09T09:00:00.000Z",
                                        "LastModifiedDate": "2026-01-10T09:00:00.000Z", "IsConverted": "true",
                                        "ConvertedOpportunityId": "006000000000001AAA"}),
        ("04l000000000006AAA", "Account", {"Id": "001000000000001AAA"}),
    )
    result = normalise_outbound(body, ORG[:15], MAPPING)
    assert canon(result.events) == [
        {"event_id": "salesforce:04l000000000001AAA", "type": "deal.created", "occurred_at": "2026-01-10T09:00:00Z",
         "deal_id": "006000000000001AAA", "rep_id": "rep-sam", "pipeline": "sales", "stage": "Prospecting",
         "amount": 5000.0, "probability": 0.1},
        {"event_id": "salesforce:04l000000000002AAA", "type": "deal.stage_changed", "occurred_at": "2026-01-12T09:00:00Z",
         "deal_id": "006000000000001AAA", "rep_id": "rep-sam", "pipeline": "sales", "to_stage": "negotiation",
         "amount": 5000.0, "probability": 0.1},
        {"event_id": "salesforce:04l000000000003AAA", "type": "deal.won", "occurred_at": "2026-01-13T09:00:00Z",
         "deal_id": "006000000000001AAA", "rep_id": "rep-sam", "pipeline": "sales", "amount": 5000.0},
        {"event_id": "salesforce:04l000000000004AAA", "type": "lead.created", "occurred_at": "2026-01-09T09:00:00Z",
         "lead_id": "00Q000000000001AAA", "rep_id": "rep-sam", "source": "Web"},
        {"event_id": "salesforce:04l000000000005AAA", "type": "lead.converted", "occurred_at": "2026-01-10T09:00:00Z",
         "lead_id": "00Q000000000001AAA", "deal_id": "006000000000001AAA"},
    ]
    assert result.ignored == ["outbound:Account"]
    # A resent message (Salesforce retries until acked) gives the same ids: counted once.
    assert canon(normalise_outbound(body, ORG, MAPPING).events) == canon(result.events)


def test_another_organizations_message_is_refused() -> None:
    with pytest.raises(WrongOrganization):
        normalise_outbound(outbound(("04l000000000001AAA", "Opportunity", OPP), org="00D000000000099EAA"), ORG, MAPPING)


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><a>&lol2;</a>',
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        b"<not closed",
        b'{"json": true}',
    ],
)
def test_hostile_or_broken_xml_is_not_normalised(body: bytes) -> None:
    with pytest.raises(Unnormalisable):
        normalise_outbound(body, ORG, MAPPING)


def test_a_notification_field_that_cannot_be_normalised_is_named() -> None:
    with pytest.raises(Unnormalisable) as info:
        normalise_outbound(outbound(("04l1", "Opportunity", {**OPP, "Amount": "lots"})), ORG, MAPPING)
    assert info.value.errors[0]["field"] == "notifications.Notification[0].sObject.Amount"


def cdc(entity: str, change: str, fields: dict, changed: list[str], record_ids: list[str] | None = None,
        seq: int = 1) -> dict:
    header = {"entityName": entity, "recordIds": record_ids or ["006000000000001AAA"], "changeType": change,
              "changeOrigin": "com/salesforce/api/soap/60.0", "transactionKey": "0002343d-9d90-e395-a86f-5fbdd9b8b3a9",
              "sequenceNumber": seq, "commitTimestamp": 1768035600000, "commitNumber": 10595, "commitUser": "005x",
              "changedFields": changed}
    return {"schema": "IeRuaY6cbI_HsV8Rv1Mc5g", "payload": {"ChangeEventHeader": header, **fields},
            "event": {"replayId": 6}}


def test_cdc_opportunity_create_update_and_close() -> None:
    body = [
        cdc("Opportunity", "CREATE", {"StageName": "Prospecting", "Amount": 5000, "Probability": 10, "IsClosed": False,
                                      "IsWon": False, "OwnerId": "005000000000001AAA"}, []),
        cdc("Opportunity", "UPDATE", {"StageName": "Negotiation", "LastModifiedDate": "2026-01-10T09:00:00Z"},
            ["StageName", "LastModifiedDate"], seq=2),
        cdc("Opportunity", "UPDATE", {"StageName": "Closed Lost", "IsClosed": True, "IsWon": False},
            ["StageName", "IsClosed"], seq=3),
        cdc("Opportunity", "UPDATE", {"Amount": 7000}, ["Amount"], seq=4),
        cdc("Opportunity", "UPDATE", {"Description": "x"}, ["Description"], seq=5),
        cdc("Account", "CREATE", {"Name": "Acme"}, [], seq=6),
    ]
    result = normalise_cdc(orjson.dumps(body), MAPPING)
    base = "salesforce-cdc:0002343d-9d90-e395-a86f-5fbdd9b8b3a9"
    assert [(e["event_id"], e["type"]) for e in canon(result.events)] == [
        (f"{base}:1:006000000000001AAA", "deal.created"),
        (f"{base}:2:006000000000001AAA", "deal.stage_changed"),
        (f"{base}:3:006000000000001AAA", "deal.lost"),
        (f"{base}:4:006000000000001AAA", "deal.updated"),
    ]
    created, moved = canon(result.events)[:2]
    assert created["probability"] == 0.1 and created["rep_id"] == "rep-sam" and created["amount"] == 5000.0
    assert moved["to_stage"] == "negotiation" and moved["occurred_at"] == "2026-01-10T09:00:00Z"
    assert result.ignored == ["cdc:Opportunity.UPDATE:unmapped_fields", "cdc:Account.CREATE"]


def test_cdc_leads_one_event_per_record_id() -> None:
    body = cdc("Lead", "UPDATE", {"OwnerId": "005000000000001AAA"}, ["OwnerId"], ["00Q1", "00Q2"])
    events = canon(normalise_cdc(orjson.dumps(body), MAPPING).events)
    assert [(e["type"], e["lead_id"], e["rep_id"]) for e in events] == [
        ("lead.assigned", "00Q1", "rep-sam"), ("lead.assigned", "00Q2", "rep-sam")]
    converted = cdc("Lead", "UPDATE", {"IsConverted": True, "ConvertedOpportunityId": "006X"},
                    ["IsConverted", "ConvertedOpportunityId"], ["00Q1"])
    assert canon(normalise_cdc(orjson.dumps(converted["payload"]), MAPPING).events)[0]["deal_id"] == "006X"


def test_cdc_field_errors_are_named() -> None:
    bad = cdc("Opportunity", "CREATE", {"Amount": 5}, [])
    with pytest.raises(Unnormalisable) as info:
        normalise_cdc(orjson.dumps([bad]), MAPPING)
    assert info.value.errors[0]["field"] == "[0].payload.StageName"


TASK_CALL = {"Subject": "Call", "TaskSubtype": "Call", "Status": "Completed", "IsClosed": True,
             "CallType": "Outbound", "CallDisposition": "Left voicemail", "CallDurationInSeconds": 42,
             "WhoId": "00Q000000000001AAA", "OwnerId": "005000000000001AAA", "ActivityDate": "2026-01-10",
             "CreatedDate": "2026-01-10T09:05:00.000Z"}


def test_cdc_task_calls_emails_and_other_tasks_become_activities() -> None:
    body = [
        cdc("Task", "CREATE", TASK_CALL, [], ["00T000000000001AAA"]),
        cdc("Task", "CREATE", {**TASK_CALL, "CallType": "Inbound"}, [], ["00T000000000002AAA"], seq=2),
        cdc("Task", "CREATE", {"TaskSubtype": "Email", "Status": "Completed", "WhoId": "0030000000000AAA",
                               "OwnerId": "005000000000001AAA"}, [], ["00T000000000003AAA"], seq=3),
        cdc("Task", "CREATE", {"TaskSubtype": "LinkedIn", "Status": "Completed", "WhoId": "00Q000000000001AAA",
                               "OwnerId": "005000000000001AAA"}, [], ["00T000000000004AAA"], seq=4),
        cdc("Task", "CREATE", {**TASK_CALL, "Status": "Not Started", "IsClosed": False}, [],
            ["00T000000000005AAA"], seq=5),
        cdc("Task", "CREATE", {**TASK_CALL, "WhoId": None}, [], ["00T000000000006AAA"], seq=6),
    ]
    result = normalise_cdc(orjson.dumps(body), MAPPING)
    assert canon(result.events) == [
        {"event_id": "salesforce:task:00T000000000001AAA", "type": "call.logged", "occurred_at": "2026-01-10T09:05:00Z",
         "lead_id": "00Q000000000001AAA", "rep_id": "rep-sam", "outcome": "voicemail", "duration_s": 42.0},
        {"event_id": "salesforce:task:00T000000000002AAA", "type": "activity.logged",
         "occurred_at": "2026-01-10T09:05:00Z", "lead_id": "00Q000000000001AAA", "rep_id": "rep-sam",
         "kind": "inbound_call", "outbound": False},
        {"event_id": "salesforce:task:00T000000000003AAA", "type": "email.sent",
         "occurred_at": canon(result.events)[2]["occurred_at"], "lead_id": "0030000000000AAA", "rep_id": "rep-sam",
         "email_id": "00T000000000003AAA"},
        {"event_id": "salesforce:task:00T000000000004AAA", "type": "activity.logged",
         "occurred_at": canon(result.events)[3]["occurred_at"], "lead_id": "00Q000000000001AAA",
         "rep_id": "rep-sam", "kind": "linkedin"},
    ]
    assert result.ignored == ["Task:open", "Task:no_who"]


def test_call_dispositions_map_to_outcomes() -> None:
    from salespulse.handlers.crm.salesforce_activities import call_outcome

    assert [call_outcome(d) for d in ("Connected", "No Answer", "Left Voicemail", "Busy", "Wrong number", None)] == [
        "connected", "no_answer", "voicemail", "busy", "unknown", "unknown"]


def test_an_outbound_task_and_its_cdc_event_are_one_call_and_an_event_is_a_booked_meeting() -> None:
    fields = {"Id": "00T000000000001AAA", "CreatedDate": "2026-01-10T09:05:00.000Z",
              "LastModifiedDate": "2026-01-10T09:05:00.000Z", **{k: str(v) for k, v in TASK_CALL.items()
                                                                  if k not in ("CreatedDate", "IsClosed")},
              "IsClosed": "true"}
    meeting = {"Id": "00U000000000001AAA", "CreatedDate": "2026-01-11T10:00:00.000Z",
               "LastModifiedDate": "2026-01-11T10:00:00.000Z", "WhoId": "00Q000000000001AAA",
               "OwnerId": "005000000000001AAA", "StartDateTime": "2026-01-15T10:00:00.000Z"}
    result = normalise_outbound(outbound(("04l1", "Task", fields), ("04l2", "Event", meeting)), ORG, MAPPING)
    call, booked = canon(result.events)
    from_cdc = canon(normalise_cdc(orjson.dumps(cdc("Task", "CREATE", TASK_CALL, [], ["00T000000000001AAA"])),
                                   MAPPING).events)
    assert call == from_cdc[0]  # same id through both channels: the dedup counts it once
    assert booked == {"event_id": "salesforce:event:00U000000000001AAA:booked", "type": "meeting.booked",
                      "occurred_at": "2026-01-11T10:00:00Z", "lead_id": "00Q000000000001AAA", "rep_id": "rep-sam",
                      "meeting_id": "00U000000000001AAA"}
    event_cdc = cdc("Event", "CREATE", {"WhoId": "00Q000000000001AAA", "OwnerId": "005000000000001AAA",
                                        "CreatedDate": "2026-01-11T10:00:00.000Z"}, [], ["00U000000000001AAA"])
    assert canon(normalise_cdc(orjson.dumps(event_cdc), MAPPING).events) == [booked]


def test_the_cometd_envelope_and_the_pubsub_api_json_carry_the_same_change_event() -> None:
    item = cdc("Lead", "UPDATE", {"OwnerId": "005000000000001AAA"}, ["OwnerId"], ["00Q1"])
    bare = canon(normalise_cdc(orjson.dumps(item["payload"]), MAPPING).events)
    cometd = {"channel": "/data/LeadChangeEvent",
              "data": {"schema": "IeRuaY6cbI_HsV8Rv1Mc5g", "payload": item["payload"], "event": {"replayId": 6}}}
    consumer_event = {"event": {"id": "f6c2…", "schema_id": "IeRuaY6cbI_HsV8Rv1Mc5g", "payload": item["payload"]},
                      "replay_id": "AAAAAAAAAAY="}
    fetch_response = {"events": [consumer_event], "latest_replay_id": "AAAAAAAAAAY=", "rpc_id": "x",
                      "pending_num_requested": 99}
    assert [e["type"] for e in bare] == ["lead.assigned"]
    for shape in (cometd, [cometd], consumer_event, fetch_response):
        assert canon(normalise_cdc(orjson.dumps(shape), MAPPING).events) == bare


def test_a_pubsub_payload_left_encoded_or_a_bitmap_of_changed_fields_is_named() -> None:
    item = cdc("Lead", "UPDATE", {"OwnerId": "005000000000001AAA"}, ["OwnerId"], ["00Q1"])
    with pytest.raises(Unnormalisable) as info:
        normalise_cdc(orjson.dumps({"event": {"schema_id": "x", "payload": "AAECAw=="}}), MAPPING)
    assert info.value.errors[0]["field"] == "body.event.payload" and "Avro" in info.value.errors[0]["message"]
    item["payload"]["ChangeEventHeader"]["changedFields"] = ["0x0A"]
    with pytest.raises(Unnormalisable) as info:
        normalise_cdc(orjson.dumps(item), MAPPING)
    assert info.value.errors[0]["field"] == "body.payload.ChangeEventHeader.changedFields"
