"""Dead-letter abuse (issue 11, finding 3): nothing unauthenticated reaches the DLQ, a dead-letter record always
fits a Kafka message, and a permanent failure is a 4xx, never the 503 that makes a CRM retry forever."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from salespulse.config import Config
from salespulse.embedded.broker import EmbeddedBroker
from salespulse.handlers.crm import IgnoredCounter, build_crm_webhooks
from salespulse.handlers.http import build_http_app
from salespulse.handlers.event_log import EventLog, EventLogRefused
from salespulse.handlers.crm.endpoint import dead_letter_record
from salespulse.kafka_connection import KafkaConnection
from salespulse.models.events import Event, EventAdapter
from salespulse.settings import MAX_BODY_BYTES, Settings
from salespulse.engine.processor import dead_letter_value
from salespulse.topics import DEAD_LETTER_RAW_BYTES, MAX_MESSAGE_BYTES
from tests.unit.crm_http import ORG_ID, MemorySink, crm_app
from tests.unit.test_crm_salesforce import OPP, outbound

OUTBOUND = "/webhooks/salesforce/outbound"


@pytest.fixture
async def client_and_sink():  # noqa: ANN201
    sink = MemorySink()
    app, _ = crm_app(sink)
    async with TestClient(TestServer(app)) as client:
        yield client, sink


def _under_the_body_limit(fill: str) -> bytes:
    """An outbound message of the configured org, just under 1 MiB, that cannot be normalised (a bad Amount)."""
    body = outbound(("04l000000000001AAA", "Opportunity", {**OPP, "Amount": "not-a-number", "Description": "x"}))
    return body.replace(b"<sf:Description>x</sf:Description>", b"<sf:Description>" + fill.encode() * (
        (MAX_BODY_BYTES - len(body) - 100) // len(fill.encode())) + b"</sf:Description>")


@pytest.mark.parametrize("body", [
    b"x" * 900_000,  # not XML
    b"<a>" + b"<b>junk</b>" * 50_000 + b"</a>",  # XML, not an outbound message
    outbound(("04l000000000001AAA", "Opportunity", {**OPP, "Amount": "bad"}), org="00D000000000099EAA"),  # another org
])
async def test_unauthenticated_junk_to_the_salesforce_endpoint_is_401_and_writes_nothing(client_and_sink, body: bytes) -> None:
    client, sink = client_and_sink
    async with client.post(OUTBOUND, data=body) as response:
        assert response.status == 401
    assert sink.dead == [] and sink.published == []


@pytest.mark.parametrize("fill", ["a", "é", "\u2603"])
async def test_a_dead_letter_of_a_body_under_1_mib_fits_a_message_and_says_it_was_cut(client_and_sink, fill: str) -> None:
    client, sink = client_and_sink
    body = _under_the_body_limit(fill)
    assert MAX_BODY_BYTES - 200 < len(body) <= MAX_BODY_BYTES
    async with client.post(OUTBOUND, data=body) as response:
        assert response.status == 200  # acknowledged: Salesforce would resend it forever
    [record] = sink.dead
    assert len(record) < MAX_MESSAGE_BYTES // 4
    decoded = orjson.loads(record)
    assert decoded["raw_truncated"] is True and decoded["raw_bytes"] == len(body)
    assert len(decoded["raw"].encode()) <= DEAD_LETTER_RAW_BYTES
    assert "Amount" in decoded["reason"]


def test_a_dead_letter_with_thousands_of_field_errors_stays_bounded() -> None:
    errors = [{"field": f"[{i}].propertyValue" + "x" * 500, "message": "expected a number " * 100} for i in range(5000)]
    record = orjson.loads(dead_letter_record("hubspot", errors, b"{}" * 400_000))
    assert len(orjson.dumps(record)) < MAX_MESSAGE_BYTES // 4
    assert len(record["errors"]) == 50 and record["errors_omitted"] == 4950


def test_a_worker_dead_letter_of_a_record_near_the_message_limit_stays_under_it() -> None:
    value = dead_letter_value((0, 7, b"\xff" * (MAX_MESSAGE_BYTES - 100)), "why " * 10_000)
    assert len(value) < MAX_MESSAGE_BYTES // 4
    assert orjson.loads(value)["raw_truncated"] is True


class RefusingSink(MemorySink):
    """An event log that refuses for good (a record over the producer's limit)."""

    async def publish(self, events: Sequence[Event]) -> None:
        raise EventLogRefused("MessageSizeTooLargeError")

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        raise EventLogRefused("MessageSizeTooLargeError")


@pytest.mark.parametrize("body", [
    outbound(("04l000000000001AAA", "Opportunity", OPP)),  # publishes
    outbound(("04l000000000001AAA", "Opportunity", {**OPP, "Amount": "bad"})),  # dead-letters
])
async def test_a_permanent_event_log_failure_is_a_4xx_not_a_503(body: bytes) -> None:
    app, _ = crm_app(RefusingSink())
    async with TestClient(TestServer(app)) as client:
        async with client.post(OUTBOUND, data=body) as response:
            assert 400 <= response.status < 500


async def test_the_cdc_endpoint_without_a_secret_answers_400_and_dead_letters_nothing() -> None:
    sink = MemorySink()
    registry = CollectorRegistry()
    rejected = Counter("salespulse_events_rejected", "x", ["endpoint", "reason"], registry=registry)
    hooks = build_crm_webhooks(Settings(salesforce_org_id=ORG_ID), Config().crm, sink, rejected, IgnoredCounter(registry))
    async with TestClient(TestServer(build_http_app(registry, {}, None, hooks))) as client:
        async with client.post("/webhooks/salesforce/cdc", data=b'{"junk": true}') as response:
            assert response.status == 400
            assert (await response.json())["errors"]
    assert sink.dead == []


async def test_a_record_over_the_message_size_is_refused_for_good_by_the_real_event_log(broker: EmbeddedBroker) -> None:
    log = EventLog(KafkaConnection.plaintext(broker.bootstrap), CollectorRegistry(), timeout_s=5)
    await log.start()
    try:
        with pytest.raises(EventLogRefused):
            await log.dead_letter(b"k", b"x" * (MAX_MESSAGE_BYTES + 10))
        await log.publish([EventAdapter.validate_python({"event_id": "ok", "type": "lead.created",
                                                         "occurred_at": "2026-11-22T09:30:00Z", "lead_id": "L1"})])
    finally:
        await log.stop()
