"""The CRM endpoints over HTTP: routed only when enabled, authenticated on the raw body, acked, DLQ, 401/413/503."""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from salespulse.handlers.crm.salesforce import ACK
from salespulse.handlers.http import build_http_app
from prometheus_client import CollectorRegistry
from tests.unit.crm_http import (
    ORG_ID,
    MemorySink,
    close_headers,
    crm_app,
    generic_headers,
    hubspot_headers,
    pipedrive_headers,
)
from tests.unit.test_crm_salesforce import OPP, outbound

HS_BATCH = orjson.dumps([
    {"eventId": 1, "subscriptionId": 1, "portalId": 1, "occurredAt": 1767225600000, "subscriptionType": "contact.creation",
     "attemptNumber": 0, "objectId": 5},
    {"eventId": 2, "subscriptionId": 1, "portalId": 1, "occurredAt": 1767225600000,
     "subscriptionType": "contact.propertyChange", "propertyName": "firstname", "propertyValue": "x", "attemptNumber": 0,
     "objectId": 5},
])


@pytest.fixture
async def client_and_sink():  # noqa: ANN201
    sink = MemorySink()
    app, registry = crm_app(sink)
    async with TestClient(TestServer(app)) as client:
        yield client, sink, registry


def url_of(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


async def test_a_signed_hubspot_batch_is_published_in_one_call_and_ignored_kinds_counted(client_and_sink) -> None:
    client, sink, registry = client_and_sink
    headers = hubspot_headers(url_of(client, "/webhooks/hubspot"), HS_BATCH)
    response = await client.post("/webhooks/hubspot", data=HS_BATCH, headers=headers)
    assert response.status == 200 and await response.json() == {"accepted": 1, "ignored": 1}
    assert [[e.event_id for e in call] for call in sink.published] == [["hubspot:1"]]
    assert registry.get_sample_value("salespulse_webhook_events_ignored_total",
                                     {"endpoint": "hubspot", "kind": "contact.propertyChange:firstname"}) == 1


async def test_bad_signatures_stale_timestamps_and_big_bodies_are_refused_before_parsing(client_and_sink) -> None:
    client, sink, registry = client_and_sink
    url = url_of(client, "/webhooks/hubspot")
    stale = hubspot_headers(url, HS_BATCH, at_ms=1)
    tampered = hubspot_headers(url, HS_BATCH)
    assert (await client.post("/webhooks/hubspot", data=HS_BATCH, headers=stale)).status == 401
    assert (await client.post("/webhooks/hubspot", data=HS_BATCH + b" ", headers=tampered)).status == 401
    assert (await client.post("/webhooks/pipedrive", data=b"{}", headers={"Authorization": "Basic eDp5"})).status == 401
    assert (await client.post("/webhooks/close", data=b"{}", headers=close_headers(b"{ }"))).status == 401
    assert (await client.post("/webhooks/salesforce/cdc", data=b"{}")).status == 401
    big = b"[" + b" " * (1024 * 1024) + b"]"
    assert (await client.post("/webhooks/hubspot", data=big, headers=hubspot_headers(url, big))).status == 413
    assert sink.published == [] and sink.dead == []
    assert registry.get_sample_value("salespulse_events_rejected_total",
                                     {"endpoint": "hubspot", "reason": "bad_signature"}) == 2


async def test_an_unnormalisable_payload_goes_whole_to_the_dlq_with_the_field_and_is_acked(client_and_sink) -> None:
    client, sink, _ = client_and_sink
    body = orjson.dumps({"meta": {"action": "change", "entity": "deal", "id": "u1", "version": "2.0"},
                         "data": {"id": 7, "status": "open", "stage_id": 3, "value": "lots"}, "previous": {"value": 1}})
    response = await client.post("/webhooks/pipedrive", data=body, headers=pipedrive_headers())
    assert response.status == 200 and (await response.json())["dead_lettered"] is True
    assert sink.published == []
    record = orjson.loads(sink.dead[0])
    assert record["endpoint"] == "pipedrive" and record["errors"][0]["field"] == "data.value"
    assert orjson.loads(record["raw"]) == orjson.loads(body)


async def test_salesforce_outbound_is_acked_in_soap_and_another_org_is_refused(client_and_sink) -> None:
    client, sink, _ = client_and_sink
    response = await client.post("/webhooks/salesforce/outbound", data=outbound(("04l1", "Opportunity", OPP), org=ORG_ID))
    assert response.status == 200 and await response.read() == ACK
    assert response.content_type == "text/xml"
    assert [e.type for e in sink.published[0]] == ["deal.created"]
    other = await client.post("/webhooks/salesforce/outbound", data=outbound(("04l1", "Opportunity", OPP),
                                                                          org="00D000000000099EAA"))
    assert other.status == 401 and len(sink.published) == 1


async def test_close_and_signed_cdc_are_accepted(client_and_sink) -> None:
    client, sink, _ = client_and_sink
    close_body = orjson.dumps({"subscription_id": "w", "event": {
        "id": "ev_1", "date_created": "2026-01-01T00:00:00", "object_type": "lead", "action": "created",
        "data": {"id": "lead_1"}}})
    assert (await client.post("/webhooks/close", data=close_body, headers=close_headers(close_body))).status == 200
    cdc = orjson.dumps({"ChangeEventHeader": {"entityName": "Lead", "changeType": "CREATE", "recordIds": ["00Q1"],
                                              "transactionKey": "t", "sequenceNumber": 1,
                                              "commitTimestamp": 1767225600000, "changedFields": []}})
    assert (await client.post("/webhooks/salesforce/cdc", data=cdc, headers=generic_headers(cdc))).status == 200
    assert [[e.event_id for e in call] for call in sink.published] == [["close:ev_1"], ["salesforce-cdc:t:1:00Q1"]]


async def test_when_the_event_log_is_down_the_crm_gets_503_to_retry_and_nothing_is_kept(client_and_sink) -> None:
    client, sink, registry = client_and_sink
    sink.failing = True
    headers = hubspot_headers(url_of(client, "/webhooks/hubspot"), HS_BATCH)
    assert (await client.post("/webhooks/hubspot", data=HS_BATCH, headers=headers)).status == 503
    assert sink.published == [] and registry.get_sample_value(
        "salespulse_events_rejected_total", {"endpoint": "hubspot", "reason": "unavailable"}) == 1


async def test_endpoints_of_unconfigured_crms_are_not_routed() -> None:
    async with TestClient(TestServer(build_http_app(CollectorRegistry(), {}, None, ()))) as client:
        for path in ("/webhooks/hubspot", "/webhooks/pipedrive", "/webhooks/close", "/webhooks/salesforce/outbound",
                     "/webhooks/salesforce/cdc"):
            assert (await client.post(path, data=b"[]")).status == 404


async def test_a_cdc_event_forwarded_as_its_cometd_message_is_accepted_not_dead_lettered(client_and_sink) -> None:
    client, sink, _ = client_and_sink
    payload = {"ChangeEventHeader": {"entityName": "Task", "changeType": "CREATE", "recordIds": ["00T1"],
                                     "transactionKey": "t", "sequenceNumber": 1, "commitTimestamp": 1767225600000,
                                     "changedFields": []},
               "TaskSubtype": "Call", "Status": "Completed", "IsClosed": True, "WhoId": "00Q1", "OwnerId": "005A"}
    cometd = orjson.dumps({"channel": "/data/TaskChangeEvent",
                           "data": {"schema": "s", "payload": payload, "event": {"replayId": 7}}})
    response = await client.post("/webhooks/salesforce/cdc", data=cometd, headers=generic_headers(cometd))
    assert response.status == 200 and await response.json() == {"accepted": 1, "ignored": 0}
    assert [[e.type for e in call] for call in sink.published] == [["call.logged"]] and sink.dead == []
