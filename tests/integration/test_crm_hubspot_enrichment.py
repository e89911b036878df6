"""HubSpot through webhooks plus its CRM API (a local stand-in serving HubSpot's documented shapes), end to
end against the real broker and Redis:

- a HubSpot-only history (contacts, calls, emails, meetings, deals) gives the same speed to lead, alerts and
  pipeline numbers as the same history sent as canonical events;
- the enricher killed in the middle of a backlog loses nothing and doubles nothing;
- webhooks are answered within HubSpot's 5 s while the API is slower than that or answers 429.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.topics import ALERTS_TOPIC, EVENTS_TOPIC
from tests.hubspot_standin import TOKEN, HubSpotStandIn, pipeline, serving
from tests.integration.stack import SalespulseProcess, metrics_text, post_events, read_topic, stack_env
from tests.integration.test_crm_webhooks import HUBSPOT_SECRET, metric_sum, post_hubspot

pytestmark = pytest.mark.integration

SLA_S = 20
PIPELINE = pipeline("default", "Sales Pipeline", [
    ("appointmentscheduled", "Appointment Scheduled", 0.2, False), ("qualifiedtobuy", "Qualified To Buy", 0.4, False),
    ("contractsent", "Contract Sent", 0.9, False), ("closedwon", "Closed Won", 1.0, True),
    ("closedlost", "Closed Lost", 0.0, True),
])
#: The mapping ``salespulse crm check hubspot --write`` gives for that pipeline (names, order, flags).
CONFIG = """
[teams]
rep-anna = "team-emea"

[crm.hubspot]
owners = { "5001" = "rep-anna" }
[crm.hubspot.stages]
appointmentscheduled = { pipeline = "sales_pipeline", stage = "appointment_scheduled", probability = 0.2, order = 0 }
qualifiedtobuy = { pipeline = "sales_pipeline", stage = "qualified_to_buy", probability = 0.4, order = 1 }
contractsent = { pipeline = "sales_pipeline", stage = "contract_sent", probability = 0.9, order = 2 }
closedwon = { pipeline = "sales_pipeline", stage = "closed_won", closed = true, won = true, probability = 1.0, order = 3 }
closedlost = { pipeline = "sales_pipeline", stage = "closed_lost", closed = true, probability = 0.0, order = 4 }
"""
COMPARED = (
    "salespulse_leads_created_total", "salespulse_lead_response_seconds", "salespulse_leads_awaiting_response",
    "salespulse_lead_response_sla_breaches_total", "salespulse_stage_entries_total",
    "salespulse_stage_transitions_total", "salespulse_deals_closed_total", "salespulse_revenue_won_total",
    "salespulse_open_deals", "salespulse_activities_total", "salespulse_deals_created",
)


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat().replace("+00:00", "Z")


def hs(event_id: int, subscription: str, object_id: int, at_s: float, **extra: object) -> dict:
    return {"eventId": event_id, "subscriptionId": 1, "portalId": 62515, "appId": 1, "occurredAt": int(at_s * 1000),
            "subscriptionType": subscription, "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM",
            **extra}


def engagement(event_id: int, type_id: str, object_id: int, at_s: float) -> dict:
    return hs(event_id, "object.creation", object_id, at_s, objectTypeId=type_id)


def stage(event_id: int, deal: int, value: str, at_s: float) -> dict:
    return hs(event_id, "deal.propertyChange", deal, at_s, propertyName="dealstage", propertyValue=value)


def compared_samples(text: str) -> dict[str, float]:
    """The compared families' samples (name and labels → value), leaving out zero-valued ones."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(COMPARED) and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            if float(value):
                out[name] = float(value)
    return out


async def alerts(bootstrap: str) -> list[tuple[str, str]]:
    return sorted((orjson.loads(v)["lead_id"], orjson.loads(v)["status"]) for _, v in await read_topic(
        bootstrap, ALERTS_TOPIC, idle_s=1.0))


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[HubSpotStandIn]:
    async with serving(HubSpotStandIn(pipelines=[PIPELINE])) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "salespulse.toml"
    path.write_text(CONFIG)
    return path


def hubspot_env(broker: EmbeddedBroker, redis_url: str, app_id: str, config: Path, standin: HubSpotStandIn) -> dict:
    return stack_env(broker.url, redis_url, app_id, SALESPULSE_CONFIG=str(config),
                     SALESPULSE_HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET, SALESPULSE_HUBSPOT_ACCESS_TOKEN=TOKEN,
                     SALESPULSE_HUBSPOT_API_URL=standin.url, SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(SLA_S))


async def test_a_hubspot_only_history_gives_the_same_numbers_and_alerts_as_canonical_events(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: object, standin: HubSpotStandIn,
    tmp_path: Path, unique_id: str, config: Path,
) -> None:
    t0 = time.time() - 120  # leads 501 and 502 were created two minutes ago; 503 and 504 just now
    created = {501: t0, 502: t0, 503: time.time() - 5, 504: time.time() - 5}
    for contact, at in created.items():
        standin.put("contacts", contact, createdate=iso(at), hubspot_owner_id=5001)
    standin.put("calls", 11, contacts=[501], hs_timestamp=iso(t0 + 5), hs_call_direction="OUTBOUND",
                hs_call_disposition="f240bbac-87c9-4f6e-bf70-924b57d47db7", hs_call_status="COMPLETED",
                hs_call_duration=60000, hubspot_owner_id=5001)
    standin.put("calls", 12, contacts=[503], hs_timestamp=iso(t0 + 100), hs_call_direction="INBOUND",
                hs_call_status="COMPLETED", hubspot_owner_id=5001)
    standin.put("emails", 21, contacts=[502], hs_timestamp=iso(t0 + 60), hs_email_direction="EMAIL",
                hs_email_status="SENT", hubspot_owner_id=5001)
    standin.put("emails", 22, contacts=[504], hs_timestamp=iso(t0 + 110), hs_email_direction="INCOMING_EMAIL",
                hubspot_owner_id=5001)
    standin.put("meetings", 31, contacts=[501], hs_timestamp=iso(t0 + 90), hs_createdate=iso(t0 + 30),
                hs_meeting_end_time=iso(t0 + 95), hs_meeting_outcome="COMPLETED", hubspot_owner_id=5001)
    standin.put("deals", 901, createdate=iso(t0 + 10), dealstage="closedwon", pipeline="default", amount=12000,
                deal_currency_code="EUR", hubspot_owner_id=5001)
    standin.history[("deals", "901")] = {"dealstage": [{"value": "qualifiedtobuy", "timestamp": iso(t0 + 10)}]}
    standin.put("deals", 902, createdate=iso(t0 + 20), dealstage="closedlost", pipeline="default", amount=3000,
                deal_currency_code="EUR", hubspot_owner_id=5001)
    standin.history[("deals", "902")] = {"dealstage": [{"value": "appointmentscheduled", "timestamp": iso(t0 + 20)}]}
    # One batch, as HubSpot sends what happened within a second: enriched and published together, so the
    # alert clock sees the same history at the same moment as with the canonical events.
    webhook = (
        [hs(100 + c, "contact.creation", c, at) for c, at in created.items()]
        + [hs(5, "deal.creation", 901, t0 + 10), stage(6, 901, "qualifiedtobuy", t0 + 10),
           hs(7, "deal.creation", 902, t0 + 20), stage(8, 902, "appointmentscheduled", t0 + 20),
           hs(9, "contact.associationChange", 501, t0 + 10, associationType="CONTACT_TO_DEAL", fromObjectId=501,
              toObjectId=901, associationRemoved=False)]
        + [engagement(10, "0-48", 11, t0 + 5), engagement(11, "0-49", 21, t0 + 60), engagement(12, "0-47", 31, t0 + 30),
           engagement(13, "0-48", 12, t0 + 100), engagement(14, "0-49", 22, t0 + 110),
           stage(15, 901, "contractsent", t0 + 40), stage(16, 902, "closedlost", t0 + 50),
           stage(17, 901, "closedwon", t0 + 70)]
    )
    rep = {"rep_id": "rep-anna"}
    canonical = [
        *({"event_id": f"c-{c}", "type": "lead.created", "occurred_at": iso(at), "lead_id": str(c)}
          for c, at in created.items()),
        *({"event_id": f"a-{c}", "type": "lead.assigned", "occurred_at": iso(at), "lead_id": str(c), **rep}
          for c, at in created.items()),
        {"event_id": "d1", "type": "deal.created", "occurred_at": iso(t0 + 10), "deal_id": "901",
         "pipeline": "sales_pipeline", "stage": "qualified_to_buy", "amount": 12000, "currency": "EUR",
         "probability": 0.4, **rep},
        {"event_id": "d2", "type": "deal.created", "occurred_at": iso(t0 + 20), "deal_id": "902",
         "pipeline": "sales_pipeline", "stage": "appointment_scheduled", "amount": 3000, "currency": "EUR",
         "probability": 0.2, **rep},
        {"event_id": "conv", "type": "lead.converted", "occurred_at": iso(t0 + 10), "lead_id": "501", "deal_id": "901"},
        {"event_id": "call", "type": "call.logged", "occurred_at": iso(t0 + 5), "lead_id": "501", "outcome": "connected",
         "duration_s": 60, **rep},
        {"event_id": "mail", "type": "email.sent", "occurred_at": iso(t0 + 60), "lead_id": "502", "email_id": "21",
         **rep},
        {"event_id": "booked", "type": "meeting.booked", "occurred_at": iso(t0 + 30), "lead_id": "501",
         "meeting_id": "31", **rep},
        {"event_id": "held", "type": "meeting.held", "occurred_at": iso(t0 + 95), "lead_id": "501", "meeting_id": "31",
         **rep},
        {"event_id": "inbound", "type": "activity.logged", "occurred_at": iso(t0 + 100), "lead_id": "503",
         "kind": "inbound_call", "outbound": False, **rep},
        {"event_id": "reply", "type": "email.replied", "occurred_at": iso(t0 + 110), "lead_id": "504", "email_id": "22",
         **rep},
        {"event_id": "s1", "type": "deal.stage_changed", "occurred_at": iso(t0 + 40), "deal_id": "901",
         "pipeline": "sales_pipeline", "to_stage": "contract_sent", "probability": 0.9},
        {"event_id": "l2", "type": "deal.lost", "occurred_at": iso(t0 + 50), "deal_id": "902",
         "pipeline": "sales_pipeline"},
        {"event_id": "w1", "type": "deal.won", "occurred_at": iso(t0 + 70), "deal_id": "901",
         "pipeline": "sales_pipeline"},
    ]
    other_broker = EmbeddedBroker(log_path=tmp_path / "tansu-canonical.log")
    other_broker.start()
    try:
        redis_base = redis_server.url.rsplit("/", 1)[0]
        env_hs = hubspot_env(fresh_broker, redis_base + "/1", f"hs-{unique_id}", config, standin)
        env_canon = stack_env(other_broker.url, redis_base + "/2", f"cn-{unique_id}",
                              SALESPULSE_CONFIG=str(config), SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(SLA_S))
        async with SalespulseProcess("run", tmp_path / "hs.log", env_hs) as via_hubspot, \
                SalespulseProcess("run", tmp_path / "canon.log", env_canon) as via_events:
            assert await post_hubspot(via_hubspot.url, webhook) == 200
            status, _ = await post_events(via_events.url, canonical)
            assert status in (200, 202)
            # Wait for both: the two untouched leads (503: only an inbound call, 504: only a reply) breach.
            deadline = time.monotonic() + 90
            while True:
                a, b = compared_samples(await metrics_text(via_hubspot.url)), compared_samples(
                    await metrics_text(via_events.url))
                breached = metric_sum(await metrics_text(via_hubspot.url),
                                      "salespulse_lead_response_sla_breaches_total")
                if a == b and breached >= 2 and metric_sum(await metrics_text(via_hubspot.url),
                                                           "salespulse_deals_closed_total") == 2:
                    break
                assert time.monotonic() < deadline, f"hubspot path {a}\n!= canonical {b}\n{via_hubspot.log_tail()}"
                await asyncio.sleep(1.0)
            text = await metrics_text(via_hubspot.url)
            hs_alerts, canon_alerts = await alerts(fresh_broker.bootstrap), await alerts(other_broker.bootstrap)
    finally:
        other_broker.stop()
    # The numbers are the story's, not merely equal: two first touches (a 5 s call, a 60 s email) …
    assert metric_sum(text, "salespulse_lead_response_seconds_count") == 2
    assert metric_sum(text, "salespulse_lead_response_seconds_sum") == pytest.approx(65, abs=0.01)
    assert metric_sum(text, "salespulse_revenue_won_total", currency="EUR") == 12000
    assert metric_sum(text, "salespulse_stage_transitions_total", direction="forward") == 1  # qualified → contract
    assert {lead for lead, status in hs_alerts if status == "firing"} == {"503", "504"}
    assert hs_alerts == canon_alerts
    assert re.search(r'salespulse_crm_enrichment_backlog\{crm="hubspot"\} 0\.0', text)


async def test_the_enricher_killed_mid_backlog_loses_nothing_and_doubles_nothing(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: object, standin: HubSpotStandIn,
    tmp_path: Path, unique_id: str, config: Path,
) -> None:
    calls = 24
    now = time.time() - 60
    for n in range(calls):
        standin.put("calls", 1000 + n, contacts=[2000 + n], hs_timestamp=iso(now + n), hs_call_status="COMPLETED",
                    hs_call_direction="OUTBOUND", hubspot_owner_id=5001)
    standin.delay_s = 0.25  # two API calls a batch: the backlog takes ~12 s to drain
    standin.rate_limit(retry_after_s=1, times=2)
    env = hubspot_env(fresh_broker, redis_server.url, f"rs-{unique_id}", config, standin)
    worker = SalespulseProcess("worker", tmp_path / "worker.log", env)
    ingest = SalespulseProcess("ingest", tmp_path / "ingest.log", env, ["--insecure"])
    async with worker:
        await worker.wait_ready()
        ingest.start()
        await ingest.wait_ready()
        for n in range(calls):
            started = time.monotonic()
            assert await post_hubspot(ingest.url, [engagement(n + 1, "0-48", 1000 + n, now + n)]) == 200
            assert time.monotonic() - started < 5.0  # HubSpot's deadline, whatever the API does
        deadline = time.monotonic() + 60
        while len(await read_topic(fresh_broker.bootstrap, EVENTS_TOPIC, idle_s=0.3)) < 3:
            assert time.monotonic() < deadline, ingest.log_tail()
        ingest.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        ingest.proc.wait()  # type: ignore[union-attr]
        written = {orjson.loads(v)["event_id"] for _, v in await read_topic(fresh_broker.bootstrap, EVENTS_TOPIC, idle_s=0.5)}
        assert 0 < len(written) < calls, "the kill must land in the middle of the backlog"
        restarted = SalespulseProcess("ingest", tmp_path / "ingest2.log", env, ["--insecure"])
        async with restarted:
            deadline = time.monotonic() + 90
            while True:
                text = await metrics_text(worker.url)
                if metric_sum(text, "salespulse_activities_total", kind="call") >= calls:
                    break
                assert time.monotonic() < deadline, restarted.log_tail()
                await asyncio.sleep(1.0)
            await asyncio.sleep(3.0)  # anything doubled would show up by now
            text = await metrics_text(worker.url)
    records = [orjson.loads(v) for _, v in await read_topic(fresh_broker.bootstrap, EVENTS_TOPIC, idle_s=0.5)]
    assert {r["event_id"] for r in records} == {f"hubspot:call:{1000 + n}:{2000 + n}" for n in range(calls)}
    assert metric_sum(text, "salespulse_activities_total", kind="call") == calls  # redelivered ids counted once
    assert metric_sum(text, "salespulse_leads_created_total") == 0


async def test_a_webhook_is_answered_within_five_seconds_while_the_api_is_slower_than_that(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: object, standin: HubSpotStandIn,
    tmp_path: Path, unique_id: str, config: Path,
) -> None:
    standin.put("calls", 7, contacts=[70], hs_timestamp=iso(time.time() - 30), hs_call_status="COMPLETED",
                hubspot_owner_id=5001)
    standin.delay_s = 8.0  # each API answer takes longer than HubSpot waits for a webhook answer
    env = hubspot_env(fresh_broker, redis_server.url, f"sl-{unique_id}", config, standin)
    env["SALESPULSE_ENRICH_HTTP_TIMEOUT_S"] = "30"
    async with SalespulseProcess("run", tmp_path / "run.log", env) as process:
        for attempt in range(3):
            started = time.monotonic()
            assert await post_hubspot(process.url, [engagement(70 + attempt, "0-48", 7, time.time() - 30)]) == 200
            assert time.monotonic() - started < 5.0
        standin.delay_s = 0.0
        standin.rate_limit(retry_after_s=1, times=1)
        deadline = time.monotonic() + 60
        while metric_sum(await metrics_text(process.url), "salespulse_activities_total", kind="call") < 1:
            assert time.monotonic() < deadline, process.log_tail()
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        text = await metrics_text(process.url)
    assert metric_sum(text, "salespulse_activities_total", kind="call") == 1  # three deliveries, one call
