"""CRM webhooks end to end against the real broker and Redis: a signed HubSpot batch and Pipedrive v2 changes
move the metrics they should (and redeliveries count once)."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.handlers.crm.signatures import hubspot_v3_signature
from salespulse.topics import EVENTS_TOPIC
from tests.integration.stack import SalespulseProcess, metrics_text, read_topic, stack_env

pytestmark = pytest.mark.integration

HUBSPOT_SECRET = "e2e-hubspot-secret"
PIPEDRIVE_AUTH = "salespulse:e2e-pass"
CONFIG = """
[teams]
rep-anna = "team-emea"
rep-bo = "team-amer"

[crm.hubspot]
owners = { "5001" = "rep-anna" }

[crm.pipedrive]
pipelines = { "1" = "smb" }
owners = { "42" = "rep-bo" }
[crm.pipedrive.stages]
"2" = { pipeline = "smb", stage = "qualified" }
"3" = { pipeline = "smb", stage = "proposal", probability = 0.5 }
"""


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for_metric(url: str, name: str, expected: float, timeout_s: float = 25.0, **labels: str) -> str:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        text = await metrics_text(url)
        value = metric_sum(text, name, **labels)
        if value == expected:
            return text
        await asyncio.sleep(0.25)
    raise AssertionError(f"{name}{labels} = {value}, expected {expected}")


@pytest_asyncio.fixture
async def stack(fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis,
                tmp_path: Path, unique_id: str) -> AsyncIterator[SalespulseProcess]:
    config = tmp_path / "salespulse.toml"
    config.write_text(CONFIG)
    env = stack_env(fresh_broker.url, redis_server.url, f"crm-{unique_id}", SALESPULSE_CONFIG=str(config),
                    SALESPULSE_HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET, SALESPULSE_PIPEDRIVE_BASIC_AUTH=PIPEDRIVE_AUTH,
                    SALESPULSE_LEAD_RESPONSE_SLA_SECONDS="3600")
    async with SalespulseProcess("run", tmp_path / "run.log", env) as process:
        yield process


async def post_hubspot(url: str, batch: list[dict]) -> int:
    body = orjson.dumps(batch)
    ts = str(int(time.time() * 1000))
    target = f"{url}/webhooks/hubspot"
    headers = {"X-HubSpot-Signature-v3": hubspot_v3_signature(HUBSPOT_SECRET, "POST", target, body, ts),
               "X-HubSpot-Request-Timestamp": ts, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(target, data=body, headers=headers) as response:
            return response.status


async def post_pipedrive(url: str, body: dict) -> int:
    auth = "Basic " + base64.b64encode(PIPEDRIVE_AUTH.encode()).decode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/webhooks/pipedrive", data=orjson.dumps(body),
                                headers={"Authorization": auth}) as response:
            return response.status


def hs(event_id: int, subscription: str, object_id: int, attempt: int = 0, **extra: object) -> dict:
    return {"eventId": event_id, "subscriptionId": 1, "portalId": 62515, "appId": 1,
            "occurredAt": int(time.time() * 1000) - 1000, "subscriptionType": subscription,
            "attemptNumber": attempt, "objectId": object_id, "changeSource": "CRM", **extra}


def pipedrive_v2(meta_id: str, entity: str, action: str, data: dict, previous: dict | None) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"meta": {"action": action, "entity": entity, "id": meta_id, "entity_id": str(data["id"]),
                     "timestamp": now, "version": "2.0", "attempt": 1, "company_id": "1", "user_id": "42"},
            "data": {**data, "update_time": now, "marked_as_done_time": now, "stage_change_time": now},
            "previous": previous}


async def test_a_signed_hubspot_batch_creates_leads_once_even_when_redelivered(stack: SalespulseProcess) -> None:
    batch = [
        hs(1001, "contact.creation", 501),
        hs(1002, "contact.creation", 502),
        hs(1003, "contact.propertyChange", 501, propertyName="hubspot_owner_id", propertyValue="5001"),
        hs(1004, "contact.propertyChange", 502, propertyName="email", propertyValue="x@example.com"),
    ]
    assert await post_hubspot(stack.url, batch) == 200
    text = await wait_for_metric(stack.url, "salespulse_leads_created_total", 2)
    assert metric_sum(text, "salespulse_leads_awaiting_response") == 2
    # HubSpot retries the whole batch (attemptNumber 1): the event ids are the same, nothing is counted twice.
    assert await post_hubspot(stack.url, [{**item, "attemptNumber": 1} for item in batch]) == 200
    assert await post_hubspot(stack.url, [hs(1005, "contact.creation", 503)]) == 200
    text = await wait_for_metric(stack.url, "salespulse_leads_created_total", 3)
    assert metric_sum(text, "salespulse_webhook_events_ignored_total", endpoint="hubspot",
                      kind="contact.propertyChange:email") == 2
    unsigned = orjson.dumps(batch)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.url}/webhooks/hubspot", data=unsigned) as response:
            assert response.status == 401


async def test_a_pipedrive_v2_stage_change_reaches_salespulse_events_and_a_done_call_counts(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker
) -> None:
    deal = {"id": 77, "title": "Acme", "value": 1200, "currency": "EUR", "status": "open", "stage_id": 3,
            "pipeline_id": 1, "owner_id": 42, "person_id": 9}
    assert await post_pipedrive(stack.url, pipedrive_v2("pd-e2e-1", "deal", "change", deal, {"stage_id": 2})) == 200
    call = {"id": 5, "type": "call", "done": True, "person_id": 9, "owner_id": 42, "duration": "00:03"}
    assert await post_pipedrive(stack.url, pipedrive_v2("pd-e2e-2", "activity", "create", call, None)) == 200
    # A retry of the same delivery (same meta.id) is counted once.
    assert await post_pipedrive(stack.url, pipedrive_v2("pd-e2e-2", "activity", "create", call, None)) == 200

    await wait_for_metric(stack.url, "salespulse_activities_total", 1, rep="rep-bo", team="team-amer", kind="call",
                          outcome="unknown")
    events = [orjson.loads(value) for _, value in await read_topic(fresh_broker.bootstrap, EVENTS_TOPIC)]
    changes = [e for e in events if e["type"] == "deal.stage_changed"]
    assert changes == [{"event_id": "pipedrive:pd-e2e-1", "type": "deal.stage_changed",
                        "occurred_at": changes[0]["occurred_at"], "deal_id": "77", "rep_id": "rep-bo",
                        "pipeline": "smb", "from_stage": "qualified", "to_stage": "proposal", "amount": 1200.0,
                        "currency": "EUR", "probability": 0.5}]
