"""Lead response end to end: first touch, SLA alerts fired by the clock, aggregates, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.topics import ALERTS_TOPIC
from tests.integration.stack import (
    SalespulseProcess,
    metric_value,
    metrics_text,
    now_iso,
    post_events,
    read_topic,
    stack_env,
    wait_for_hash,
)

pytestmark = pytest.mark.integration
SLA_S = 3


def lead(lead_id: str, team: str = "emea", rep: str = "rep-1", source: str = "google_ads", at: str | None = None) -> dict:
    return {"event_id": f"created-{lead_id}", "type": "lead.created", "occurred_at": at or now_iso(),
            "lead_id": lead_id, "rep_id": rep, "team": team, "source": source}


def touch(lead_id: str, rep: str = "rep-1", at: str | None = None, n: int = 0) -> dict:
    return {"event_id": f"call-{lead_id}-{n}", "type": "call.logged", "occurred_at": at or now_iso(),
            "lead_id": lead_id, "rep_id": rep, "outcome": "no_answer"}


def env_for(broker: EmbeddedBroker, redis_server: EmbeddedRedis, unique_id: str) -> dict[str, str]:
    return stack_env(broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(SLA_S))


@pytest_asyncio.fixture
async def stack(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, unique_id: str
) -> AsyncIterator[SalespulseProcess]:
    async with SalespulseProcess("run", tmp_path / "run.log", env_for(fresh_broker, redis_server, unique_id)) as process:
        yield process


async def alerts_in_topic(bootstrap: str, rule: str = "lead_response_sla") -> list[dict]:
    """The topic's alerts of one rule (pre-breach warnings go to the same topic)."""
    alerts = [orjson.loads(value) for _, value in await read_topic(bootstrap, ALERTS_TOPIC)]
    return [alert for alert in alerts if alert["alert"] == rule]


async def wait_for_alerts(bootstrap: str, predicate, timeout_s: float = 20.0) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        alerts = await alerts_in_topic(bootstrap)
        if predicate(alerts):
            return alerts
        await asyncio.sleep(0.3)
    raise AssertionError(f"alerts so far: {alerts}")


async def test_an_untouched_lead_fires_at_its_deadline_and_resolves_on_first_touch(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, redis_client: aioredis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("salespulse:alerts")
    assert (await post_events(stack.url, [lead("L-slow"), lead("L-fast")]))[0] == 202
    assert (await post_events(stack.url, touch("L-fast")))[0] == 202
    posted = time.time()

    alerts = await wait_for_alerts(fresh_broker.bootstrap, lambda a: any(x["lead_id"] == "L-slow" for x in a))
    firing = [a for a in alerts if a["lead_id"] == "L-slow"]
    assert [a["status"] for a in firing] == ["firing"]
    assert not [a for a in alerts if a["lead_id"] == "L-fast"]
    alert = firing[0]
    assert (alert["alert"], alert["rep_id"], alert["team"], alert["source"]) == ("lead_response_sla", "rep-1", "emea", "google_ads")
    assert SLA_S <= alert["age_seconds"] < SLA_S + 2, alert  # emitted at the deadline, not later
    assert time.time() - posted < SLA_S + 6

    text = await metrics_text(stack.url)
    assert metric_value(text, "salespulse_leads_awaiting_response", team="emea") == 1
    assert metric_value(text, "salespulse_oldest_awaiting_lead_age_seconds", team="emea") >= SLA_S
    assert metric_value(text, "salespulse_lead_response_sla_breaches_total", team="emea", rep="rep-1") == 1

    assert (await post_events(stack.url, touch("L-slow")))[0] == 202
    alerts = await wait_for_alerts(fresh_broker.bootstrap, lambda a: any(x["status"] == "resolved" for x in a))
    assert sorted(a["status"] for a in alerts if a["lead_id"] == "L-slow") == ["firing", "resolved"]
    received = []
    until = time.monotonic() + 10
    while len(received) < 2 and time.monotonic() < until:
        # None also when the message read was the subscribe confirmation: keep reading.
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None and orjson.loads(message["data"])["alert"] == "lead_response_sla":
            received.append(orjson.loads(message["data"]))
    assert [m["status"] for m in received] == ["firing", "resolved"]
    warnings = await alerts_in_topic(fresh_broker.bootstrap, "lead_response_warning")
    assert [(a["lead_id"], a["status"]) for a in warnings] == [("L-slow", "firing"), ("L-slow", "resolved")]
    await pubsub.aclose()

    totals = await wait_for_hash(redis_client, "salespulse:lead_response:team:emea:all", {"created": "2", "touched": "2", "within_sla": "1", "late": "1"})
    assert float(totals["within_sla_rate"]) == 0.5 and float(totals["contact_coverage"]) == 1.0
    await wait_for_hash(redis_client, "salespulse:lead_response:source:google_ads:rolling:1h", {"created": "2"})
    text = await metrics_text(stack.url)
    assert metric_value(text, "salespulse_leads_awaiting_response", team="emea") in (None, 0)
    assert metric_value(text, "salespulse_lead_response_seconds_count", team="emea", source="google_ads") == 2
    assert metric_value(text, "salespulse_leads_created_total", team="emea", source="google_ads") == 2


async def test_a_touch_that_arrives_before_its_lead_and_reassignment_give_the_right_answer(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, redis_client: aioredis.Redis
) -> None:
    created_at = now_iso(-60)
    touched_at = now_iso(-30)
    # The touch (by rep-2, helping out) is in the log before the lead: credited to rep-1, the owner at
    # the time of the touch, with the response measured from the creation that arrives later.
    assert (await post_events(stack.url, touch("L-ooo", rep="rep-2", at=touched_at)))[0] == 202
    assert (await post_events(stack.url, lead("L-ooo", rep="rep-1", at=created_at)))[0] == 202
    await wait_for_hash(redis_client, "salespulse:lead_response:team:emea:all", {"created": "1", "touched": "1"})
    totals = await wait_for_hash(redis_client, "salespulse:lead_response:rep:rep-1:all", {"created": "1", "touched": "1", "late": "1"})
    assert float(totals["avg_response_s"]) == pytest.approx(30, abs=0.01)
    await asyncio.sleep(SLA_S + 1)
    assert not await alerts_in_topic(fresh_broker.bootstrap)  # created 60 s ago: history, and touched anyway


async def test_a_backfilled_lead_is_measured_but_never_alerts(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, redis_client: aioredis.Redis
) -> None:
    assert (await post_events(stack.url, lead("L-old", at=now_iso(-3 * 86400))))[0] == 202
    await wait_for_hash(redis_client, "salespulse:lead_response:team:emea:all", {"created": "1"})
    await asyncio.sleep(SLA_S + 1)
    assert not await alerts_in_topic(fresh_broker.bootstrap)
    text = await metrics_text(stack.url)
    assert metric_value(text, "salespulse_lead_response_sla_breaches_total", team="emea", rep="rep-1") == 1
    assert metric_value(text, "salespulse_leads_awaiting_response", team="emea") in (None, 0)


async def test_a_worker_killed_while_leads_wait_fires_each_breached_lead_exactly_once(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, unique_id: str
) -> None:
    env = env_for(fresh_broker, redis_server, unique_id)
    first = SalespulseProcess("run", tmp_path / "run1.log", env)
    first.start()
    await first.wait_ready()
    early = [lead(f"L-early-{i}") for i in range(5)]
    assert (await post_events(first.url, early))[0] == 202
    await wait_for_alerts(fresh_broker.bootstrap, lambda a: len(a) >= 5)  # these fired before the crash
    waiting = [lead(f"L-wait-{i}") for i in range(10)]
    assert (await post_events(first.url, waiting))[0] == 202
    await wait_for_hash(redis_client, "salespulse:lead_response:team:emea:all", {"created": "15"})
    first.kill()  # their deadlines pass while no worker runs

    await asyncio.sleep(SLA_S + 1)
    second = SalespulseProcess("run", tmp_path / "run2.log", env)
    second.start()
    try:
        await second.wait_ready()
        assert (await post_events(second.url, early + waiting))[0] == 202  # the CRM retries too
        alerts = await wait_for_alerts(fresh_broker.bootstrap, lambda a: len(a) >= 15, timeout_s=30)
        await asyncio.sleep(2)
        alerts = await alerts_in_topic(fresh_broker.bootstrap)
        firing = sorted(a["lead_id"] for a in alerts if a["status"] == "firing")
        assert firing == sorted(x["lead_id"] for x in early + waiting), "every breached lead fires exactly once"
    finally:
        second.stop()


async def test_a_worker_that_takes_over_partitions_takes_over_their_clocks(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, unique_id: str
) -> None:
    """Two workers share the partitions; one is SIGKILLed; the survivor fires every lead exactly once."""
    env = {**env_for(fresh_broker, redis_server, unique_id), "SALESPULSE_LEAD_RESPONSE_SLA_SECONDS": "20"}
    ingest = SalespulseProcess("ingest", tmp_path / "ingest.log", env, args=["--insecure"])
    first = SalespulseProcess("worker", tmp_path / "worker1.log", env)
    second = SalespulseProcess("worker", tmp_path / "worker2.log", env)
    for process in (ingest, first):
        process.start()
    try:
        await ingest.wait_ready()
        await first.wait_ready()
        second.start()
        await second.wait_ready()  # the group rebalanced: each worker owns some partitions
        leads = [lead(f"L-move-{i}") for i in range(24)]
        assert (await post_events(ingest.url, leads))[0] == 202
        await wait_for_hash(redis_client, "salespulse:lead_response:team:emea:all", {"created": "24"})
        first.kill()  # its partitions, with their waiting leads and deadlines, move to the survivor
        alerts = await wait_for_alerts(fresh_broker.bootstrap, lambda a: len(a) >= 24, timeout_s=60)
        await asyncio.sleep(3)
        alerts = await alerts_in_topic(fresh_broker.bootstrap)
        assert sorted(a["lead_id"] for a in alerts if a["status"] == "firing") == sorted(x["lead_id"] for x in leads)
        text = await metrics_text(second.url)
        assert metric_value(text, "salespulse_lead_response_sla_breaches_total", team="emea", rep="rep-1") == 24
    finally:
        for process in (second, ingest):
            process.stop()
