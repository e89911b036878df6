"""``SALESPULSE_FAMILIES``: the metric families split over two consumer groups give every family's outputs,
each from the one group that runs it, with the pipeline's follow-ups reaching the other group's engagement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.integration.stack import (
    SalespulseProcess,
    call,
    metric_value,
    metrics_text,
    now_iso,
    post_events,
    stack_env,
    wait_for_hash,
)

pytestmark = pytest.mark.integration


def ev(event_id: str, type_: str, offset_s: float, **fields: object) -> dict:
    return {"event_id": event_id, "type": type_, "occurred_at": now_iso(offset_s), **fields}


async def test_families_split_over_two_consumer_groups_publish_every_family_once(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path,
    unique_id: str,
) -> None:
    rep, team, lead = f"rep-{unique_id}", f"team-{unique_id}", f"L-{unique_id}"
    base = stack_env(fresh_broker.url, redis_server.url, f"t-{unique_id}")
    live = SalespulseProcess("worker", tmp_path / "live.log", {
        **base, "SALESPULSE_APP_ID": f"t-{unique_id}-live", "SALESPULSE_FAMILIES": "lead_response, activity"})
    deals = SalespulseProcess("worker", tmp_path / "deals.log", {
        **base, "SALESPULSE_APP_ID": f"t-{unique_id}-deals", "SALESPULSE_FAMILIES": "engagement,pipeline"})
    ingest = SalespulseProcess("ingest", tmp_path / "ingest.log", base, args=["--insecure"])
    processes = (live, deals, ingest)
    for process in processes:
        process.start()
    try:
        await asyncio.gather(*(process.wait_ready() for process in processes))
        events = [
            ev("lead", "lead.created", -900, lead_id=lead, rep_id=rep, team=team, source="ads"),
            call("call", rep, team, "connected", lead=lead, occurred_at=now_iso(-800)),
            ev("deal", "deal.created", -700, deal_id=f"D-{unique_id}", lead_id=lead, pipeline="default",
               stage="qualification", amount=1000, currency="USD", rep_id=rep, team=team, source="ads"),
            ev("won", "deal.won", -600, deal_id=f"D-{unique_id}", pipeline="default"),
        ]
        status, body = await post_events(ingest.url, events)
        assert status == 202, body

        await wait_for_hash(redis_client, f"salespulse:activity:rep:{rep}:all", {"call": "1"})
        await wait_for_hash(redis_client, f"salespulse:lead_response:rep:{rep}:all", {"created": "1", "touched": "1"})
        await wait_for_hash(redis_client, f"salespulse:pipeline:rep:{rep}:all", {"won": "1"})
        # lead.deal_closed, written by the pipeline family, is read by engagement on the lead's partition
        await wait_for_hash(redis_client, f"salespulse:engagement:rep:{rep}:all", {"reached:call": "1", "won:call": "1"})

        live_text, deals_text = await metrics_text(live.url), await metrics_text(deals.url)
        assert metric_value(live_text, "salespulse_activities_total", rep=rep, team=team, kind="call", outcome="connected") == 1
        assert metric_value(live_text, "salespulse_leads_created_total", team=team, source="ads") == 1
        assert "salespulse_deals_closed_total" not in live_text
        assert "salespulse_email_events_total" not in live_text
        assert metric_value(deals_text, "salespulse_deals_closed_total", pipeline="default", outcome="won", rep=rep) == 1
        assert "salespulse_activities_total{" not in deals_text
        assert "salespulse_leads_created_total{" not in deals_text
    finally:
        for process in processes:
            process.stop()
