"""HubSpot enrichment against a local stand-in of HubSpot's CRM API (its documented response shapes): the API
client's rate limits and retries, engagements, contacts and deals turned into canonical events, the webhook
kept whole before the answer, and the enricher's retry-until-written loop."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from salespulse.crm_config import HubSpotMapping
from salespulse.handlers.crm.endpoint import IgnoredCounter
from salespulse.handlers.crm.enricher import EnrichmentMetrics, HubSpotEnricher
from salespulse.kafka_connection import KafkaConnection
from salespulse.handlers.crm.hubspot_api import ApiFailures, ApiUnavailable, HubSpotApi, ObjectGone
from salespulse.handlers.crm.hubspot_enrich import enrich_batch, pipeline_stage_mappings
from tests.hubspot_standin import TOKEN, HubSpotStandIn, pipeline, serving
from tests.unit.crm_helpers import canon
from tests.unit.crm_http import MemorySink, crm_app, hubspot_headers

T0 = 1767225600000  # 2026-01-01T00:00:00Z
MAPPING = HubSpotMapping(owners={"5001": "rep-anna"})
PIPELINE = pipeline("default", "Sales Pipeline", [
    ("appointmentscheduled", "Appointment Scheduled", 0.2, False), ("qualifiedtobuy", "Qualified To Buy", 0.4, False),
    ("contractsent", "Contract Sent", 0.9, False), ("closedwon", "Closed Won", 1.0, True),
    ("closedlost", "Closed Lost", 0.0, True),
])


def hs(event_id: int, subscription: str, object_id: int, at: int = T0, **extra: object) -> dict:
    return {"eventId": event_id, "subscriptionId": 77, "portalId": 62515, "appId": 54321, "occurredAt": at,
            "subscriptionType": subscription, "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM", **extra}


def obj(event_id: int, type_id: str, object_id: int, action: str = "creation", **extra: object) -> dict:
    return hs(event_id, f"object.{action}", object_id, objectTypeId=type_id, **extra)


class Sleeps:
    """Records the waits the API client asks for instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def standin() -> AsyncIterator[HubSpotStandIn]:
    async with serving(HubSpotStandIn(pipelines=[PIPELINE])) as server:
        yield server


def api_for(standin: HubSpotStandIn, registry: CollectorRegistry | None = None, token: str = TOKEN,
            sleeps: Sleeps | None = None, max_attempts: int = 6) -> HubSpotApi:
    failures = ApiFailures(registry or CollectorRegistry())
    return HubSpotApi(standin.url, token, failures, sleep=sleeps or Sleeps(), max_attempts=max_attempts)


async def test_a_429_waits_for_retry_after_and_5xx_back_off_then_the_answer_is_read(standin: HubSpotStandIn) -> None:
    standin.put("calls", 1, hs_call_status="COMPLETED")
    standin.rate_limit(retry_after_s=3)
    standin.fail_next.append((502, {}))
    registry, sleeps = CollectorRegistry(), Sleeps()
    api = api_for(standin, registry, sleeps=sleeps)
    try:
        assert (await api.object("calls", "1", ["hs_call_status"]))["hs_call_status"] == "COMPLETED"
    finally:
        await api.close()
    assert sleeps.waits[0] == 3.0  # HubSpot's Retry-After, not a guess
    assert len(standin.requests) == 3
    for reason in ("rate_limited", "server_error"):
        assert registry.get_sample_value("salespulse_crm_api_failures_total", {"crm": "hubspot", "reason": reason}) == 1


async def test_without_retry_after_the_rate_limit_window_header_is_waited(standin: HubSpotStandIn) -> None:
    standin.put("calls", 1)
    standin.fail_next.append((429, {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}))
    sleeps = Sleeps()
    api = api_for(standin, sleeps=sleeps)
    try:
        await api.object("calls", "1", [])
    finally:
        await api.close()
    assert sleeps.waits == [10.0]


async def test_an_api_that_keeps_failing_or_refuses_the_token_is_unavailable_and_a_deleted_object_gone(
    standin: HubSpotStandIn,
) -> None:
    standin.fail_next += [(503, {})] * 3
    api = api_for(standin, max_attempts=3)
    with pytest.raises(ApiUnavailable):
        await api.object("calls", "1", [])
    with pytest.raises(ObjectGone):
        await api.object("calls", "404", [])
    await api.close()
    wrong = api_for(standin, token="wrong")
    with pytest.raises(ApiUnavailable) as info:
        await wrong.object("calls", "1", [])
    await wrong.close()
    assert info.value.reason == "unauthorized" and "SALESPULSE_HUBSPOT_ACCESS_TOKEN" in str(info.value)


def test_pipelines_give_stage_names_order_probability_and_closed_won_flags() -> None:
    stages = pipeline_stage_mappings([PIPELINE])
    assert stages["qualifiedtobuy"].model_dump() == {"pipeline": "sales_pipeline", "stage": "qualified_to_buy",
                                                     "closed": False, "won": False, "probability": 0.4, "order": 1}
    assert (stages["closedwon"].closed, stages["closedwon"].won) == (True, True)
    assert (stages["closedlost"].closed, stages["closedlost"].won) == (True, False)


async def enrich(standin: HubSpotStandIn, batch: list[dict], mapping: HubSpotMapping = MAPPING):  # noqa: ANN201
    api = api_for(standin)
    try:
        return await enrich_batch(orjson.dumps(batch), api, mapping)
    finally:
        await api.close()


async def test_engagements_become_touches_only_when_outbound(standin: HubSpotStandIn) -> None:
    standin.put("calls", 11, contacts=[501], hs_timestamp="2026-01-01T00:05:00.000Z", hs_call_direction="OUTBOUND",
                hs_call_disposition="f240bbac-87c9-4f6e-bf70-924b57d47db7", hs_call_status="COMPLETED",
                hs_call_duration=95000, hubspot_owner_id=5001)
    standin.put("calls", 12, contacts=[501], hs_timestamp="2026-01-01T00:06:00Z", hs_call_direction="INBOUND",
                hs_call_status="COMPLETED", hubspot_owner_id=5001)
    standin.put("calls", 13, contacts=[501], hs_timestamp="2026-01-01T00:07:00Z", hs_call_status="RINGING",
                hubspot_owner_id=5001)
    standin.put("emails", 21, contacts=[501, 502], hs_timestamp="2026-01-01T00:08:00Z", hs_email_direction="EMAIL",
                hs_email_status="SENT", hubspot_owner_id=5001)
    standin.put("emails", 22, contacts=[501], hs_timestamp="2026-01-01T00:09:00Z",
                hs_email_direction="INCOMING_EMAIL", hubspot_owner_id=5001)
    standin.put("meetings", 31, contacts=[501], hs_timestamp="2026-01-02T10:00:00Z",
                hs_createdate="2026-01-01T00:10:00Z", hs_meeting_end_time="2026-01-02T10:30:00Z",
                hs_meeting_outcome="COMPLETED", hubspot_owner_id=5001)
    standin.put("notes", 41, contacts=[501], hs_timestamp="2026-01-01T00:11:00Z", hubspot_owner_id=5001)
    standin.put("tasks", 51, contacts=[501], hs_timestamp="2026-01-01T00:12:00Z", hs_task_status="COMPLETED",
                hs_task_type="LINKED_IN", hs_task_completion_date="2026-01-01T00:13:00Z", hubspot_owner_id=5001)
    standin.put("calls", 14, hs_timestamp="2026-01-01T00:07:00Z", hubspot_owner_id=5001)  # no contact
    result = await enrich(standin, [
        obj(1, "0-48", 11), obj(2, "0-48", 12), obj(3, "0-48", 13), obj(4, "0-49", 21), obj(5, "0-49", 22),
        obj(6, "0-47", 31), obj(7, "0-46", 41), obj(8, "0-27", 51), obj(9, "0-48", 14),
        obj(10, "0-48", 99),  # deleted since
        obj(11, "0-48", 11, "propertyChange", propertyName="hs_call_title", propertyValue="x"),
    ])
    summary = [(e["event_id"], e["type"], e["lead_id"], e.get("rep_id"), e["occurred_at"]) for e in canon(result.events)]
    assert summary == [
        ("hubspot:call:11:501", "call.logged", "501", "rep-anna", "2026-01-01T00:05:00Z"),
        ("hubspot:call:12:501", "activity.logged", "501", "rep-anna", "2026-01-01T00:06:00Z"),
        ("hubspot:email:21:501:sent", "email.sent", "501", "rep-anna", "2026-01-01T00:08:00Z"),
        ("hubspot:email:21:502:sent", "email.sent", "502", "rep-anna", "2026-01-01T00:08:00Z"),
        ("hubspot:email:22:501:replied", "email.replied", "501", "rep-anna", "2026-01-01T00:09:00Z"),
        ("hubspot:meeting:31:501:booked", "meeting.booked", "501", "rep-anna", "2026-01-01T00:10:00Z"),
        ("hubspot:meeting:31:501:held", "meeting.held", "501", "rep-anna", "2026-01-02T10:30:00Z"),
        ("hubspot:note:41:501", "activity.logged", "501", "rep-anna", "2026-01-01T00:11:00Z"),
        ("hubspot:task:51:501", "activity.logged", "501", "rep-anna", "2026-01-01T00:13:00Z"),
    ]
    call, inbound = canon(result.events)[:2]
    assert call["outcome"] == "connected" and call["duration_s"] == 95.0
    assert inbound["kind"] == "inbound_call" and inbound["outbound"] is False
    assert canon(result.events)[8]["kind"] == "task_linked_in"
    assert result.ignored == ["call:unfinished", "call:no_contact", "call.propertyChange:hs_call_title"]
    assert [reason.split(":")[1].strip() for reason, _ in result.dead] == ["call.creation 99"]
    assert result.dead[0][1]["objectId"] == 99


async def test_contacts_and_deals_are_read_from_the_api_and_the_initial_stage_change_is_not_a_second_entry(
    standin: HubSpotStandIn,
) -> None:
    standin.put("contacts", 501, createdate="2026-01-01T00:00:00Z", hubspot_owner_id=5001, lifecyclestage="lead")
    standin.put("contacts", 502, createdate="2026-01-01T00:00:00Z", lifecyclestage="marketingqualifiedlead")
    standin.put("deals", 901, createdate="2026-01-01T01:00:00Z", dealstage="contractsent", pipeline="default",
                amount="12000", deal_currency_code="EUR", hubspot_owner_id=5001)
    standin.history[("deals", "901")] = {"dealstage": [
        {"value": "contractsent", "timestamp": "2026-01-03T00:00:00Z", "sourceType": "CRM_UI"},
        {"value": "qualifiedtobuy", "timestamp": "2026-01-01T01:00:00Z", "sourceType": "CRM_UI"},
    ]}
    created_ms = T0 + 3600_000
    result = await enrich(standin, [
        hs(1, "contact.creation", 501),
        hs(6, "contact.creation", 502),
        hs(2, "deal.creation", 901, at=created_ms),
        hs(3, "deal.propertyChange", 901, at=created_ms, propertyName="dealstage", propertyValue="qualifiedtobuy"),
        hs(4, "deal.propertyChange", 901, at=T0 + 2 * 86400_000, propertyName="dealstage",
           propertyValue="contractsent"),
        # a workflow moving the deal a second after its creation is a real move, not the initial value
        hs(7, "deal.propertyChange", 901, at=created_ms + 1000, propertyName="dealstage",
           propertyValue="appointmentscheduled"),
        hs(5, "deal.propertyChange", 901, at=T0 + 3 * 86400_000, propertyName="dealstage", propertyValue="closedwon"),
    ])
    assert canon(result.events) == [
        {"event_id": "hubspot:1", "type": "lead.created", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "501"},
        {"event_id": "hubspot:1:assigned", "type": "lead.assigned", "occurred_at": "2026-01-01T00:00:00Z",
         "lead_id": "501", "rep_id": "rep-anna"},
        {"event_id": "hubspot:6", "type": "lead.created", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "502"},
        {"event_id": "hubspot:6:qualified", "type": "lead.qualified", "occurred_at": "2026-01-01T00:00:00Z",
         "lead_id": "502"},
        {"event_id": "hubspot:deal:901:created", "type": "deal.created", "occurred_at": "2026-01-01T01:00:00Z",
         "deal_id": "901", "rep_id": "rep-anna", "pipeline": "sales_pipeline", "stage": "qualified_to_buy",
         "amount": 12000.0, "currency": "EUR", "probability": 0.4},
        {"event_id": "hubspot:4", "type": "deal.stage_changed", "occurred_at": "2026-01-03T00:00:00Z",
         "deal_id": "901", "pipeline": "sales_pipeline", "to_stage": "contract_sent", "probability": 0.9},
        {"event_id": "hubspot:7", "type": "deal.stage_changed", "occurred_at": "2026-01-01T01:00:01Z",
         "deal_id": "901", "pipeline": "sales_pipeline", "to_stage": "appointment_scheduled", "probability": 0.2},
        {"event_id": "hubspot:5", "type": "deal.won", "occurred_at": "2026-01-04T00:00:00Z", "deal_id": "901",
         "pipeline": "sales_pipeline"},
    ]
    assert result.ignored == ["deal.dealstage:initial"]


async def test_with_an_api_token_the_webhook_is_kept_whole_and_answered_without_calling_hubspot() -> None:
    sink = MemorySink()
    app, _ = crm_app(sink, hubspot_access_token="t", hubspot_api_url="http://127.0.0.1:9")  # nothing listens there
    batch = orjson.dumps([obj(1, "0-48", 11), hs(2, "contact.creation", 501)])
    bad = orjson.dumps([hs(3, "contact.creation", 501, at=-5)])
    async with TestClient(TestServer(app)) as client:
        url = str(client.make_url("/webhooks/hubspot"))
        response = await client.post("/webhooks/hubspot", data=batch, headers=hubspot_headers(url, batch))
        assert response.status == 200 and await response.json() == {"accepted": 2, "ignored": 0, "deferred": True}
        assert sink.deferred == [("hubspot", batch)] and sink.published == []
        # a batch that cannot be read is still dead-lettered at the edge, with the field named
        response = await client.post("/webhooks/hubspot", data=bad, headers=hubspot_headers(url, bad))
        assert (await response.json())["dead_lettered"] is True and b"[0].occurredAt" in sink.dead[0]
        assert len(sink.deferred) == 1
        # the raw topic cannot be written: 503, so HubSpot delivers the batch again (nothing is lost)
        sink.failing = True
        response = await client.post("/webhooks/hubspot", data=batch, headers=hubspot_headers(url, batch))
        assert response.status == 503 and len(sink.deferred) == 1


Record = namedtuple("Record", "key value offset")


async def test_the_enricher_retries_a_batch_until_hubspot_answers_and_writes_before_it_returns(
    standin: HubSpotStandIn,
) -> None:
    standin.put("calls", 11, contacts=[501], hs_timestamp="2026-01-01T00:05:00Z", hs_call_status="COMPLETED",
                hubspot_owner_id=5001)
    standin.fail_next += [(500, {})] * 2  # api max_attempts=1 below: each fails one whole attempt
    registry = CollectorRegistry()
    metrics = EnrichmentMetrics(registry)
    api = HubSpotApi(standin.url, TOKEN, metrics.failures, sleep=Sleeps(), max_attempts=1)
    sink = MemorySink()
    ignored = IgnoredCounter(registry)
    enricher = HubSpotEnricher(KafkaConnection.plaintext("unused:9092"), "g", api, MAPPING, sink, metrics, ignored, retry_pause_s=0.01)
    try:
        assert await enricher.handle(Record(b"hubspot", orjson.dumps([obj(1, "0-48", 11), obj(2, "0-48", 99),
                                                                      obj(3, "0-46", 11, "deletion")]), 0))
    finally:
        await api.close()
    assert [[e.event_id for e in call] for call in sink.published] == [["hubspot:call:11:501"]]
    assert len(sink.dead) == 1 and orjson.loads(sink.dead[0])["reason"].startswith("hubspot enrichment: call.creation 99")
    assert registry.get_sample_value("salespulse_crm_enrichment_retries_total", {"crm": "hubspot"}) == 2
    assert registry.get_sample_value("salespulse_crm_enrichment_dead_lettered_total", {"crm": "hubspot"}) == 1
    assert registry.get_sample_value("salespulse_webhook_events_ignored_total",
                                     {"endpoint": "hubspot", "kind": "note.deletion"}) == 1


async def test_a_batch_the_enricher_cannot_read_is_dead_lettered_whole_with_its_reason(
    standin: HubSpotStandIn,
) -> None:
    standin.put("deals", 901, createdate="2026-01-01T01:00:00Z", dealstage="qualifiedtobuy", amount="lots")
    registry = CollectorRegistry()
    metrics = EnrichmentMetrics(registry)
    api = HubSpotApi(standin.url, TOKEN, metrics.failures, sleep=Sleeps())
    sink = MemorySink()
    enricher = HubSpotEnricher(KafkaConnection.plaintext("unused:9092"), "g", api, MAPPING, sink, metrics)
    try:
        assert await enricher.handle(Record(b"hubspot", b'{"not": "a batch"}', 0))
        assert await enricher.handle(Record(b"hubspot", orjson.dumps([hs(2, "deal.creation", 901)]), 1))
    finally:
        await api.close()
    whole, item = (orjson.loads(d) for d in sink.dead)
    assert whole["reason"].startswith("hubspot enrichment: cannot read the batch") and whole["raw"]["raw"]
    assert "deal.amount" in item["reason"] and item["raw"]["objectId"] == 901
    assert sink.published == []
    assert registry.get_sample_value("salespulse_crm_enrichment_records_total",
                                     {"crm": "hubspot", "outcome": "dead_letter"}) == 1
