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
