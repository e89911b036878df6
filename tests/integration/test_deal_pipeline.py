"""Pipeline family end to end: stages, closes, lead links through Kafka, quotas, outputs, a SIGKILLed worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.integration.stack import (
    SalespulseProcess,
    metric_value,
    metrics_text,
    now_iso,
    post_events,
    stack_env,
    wait_for_hash,
    wait_for_topic_records,
)
from salespulse.topics import metrics_topic

pytestmark = pytest.mark.integration
PERIOD = datetime.now(timezone.utc).strftime("%Y-%m")
CONFIG = f"""
currency = "USD"
[pipelines.sales]
stages = ["new", "meeting", "proposal"]
won_stages = ["closed_won"]
lost_stages = ["closed_lost"]
probabilities = {{ new = 0.1, meeting = 0.12, proposal = 0.83 }}

[quotas.rep-1]
"{PERIOD}" = 100000
"""


def ev(event_id: str, type_: str, offset_s: float = 0.0, **fields: object) -> dict:
    return {"event_id": event_id, "type": type_, "occurred_at": now_iso(offset_s), **fields}


def deal_created(deal: str, amount: float, stage: str = "new", lead: str | None = None, offset_s: float = -600) -> dict:
    fields: dict = {"deal_id": deal, "pipeline": "sales", "stage": stage, "amount": amount, "currency": "USD",
                    "rep_id": "rep-1", "team": "emea", "source": "ads"}
    if lead:
        fields["lead_id"] = lead
    return ev(f"created-{deal}", "deal.created", offset_s, **fields)


def moved(deal: str, to: str, offset_s: float = -300) -> dict:
    return ev(f"moved-{deal}-{to}", "deal.stage_changed", offset_s, deal_id=deal, pipeline="sales", to_stage=to)


def env_for(broker: EmbeddedBroker, redis_server: EmbeddedRedis, unique_id: str, config: Path) -> dict[str, str]:
    return stack_env(broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_CONFIG=str(config))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "salespulse.toml"
    path.write_text(CONFIG)
    return path


@pytest_asyncio.fixture
async def stack(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str, config_file: Path
) -> AsyncIterator[SalespulseProcess]:
    env = env_for(fresh_broker, redis_server, unique_id, config_file)
    async with SalespulseProcess("run", tmp_path / "run.log", env) as process:
        yield process


async def test_stages_closes_lead_links_quotas_and_forecast_reach_redis_prometheus_and_the_topic(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, redis_client: aioredis.Redis
) -> None:
    events = [
        ev("lead-L1", "lead.created", -900, lead_id="L1", rep_id="rep-1", team="emea", source="ads", mql=True),
        ev("lead-L2", "lead.created", -900, lead_id="L2", rep_id="rep-1", team="emea", source="ads"),
        ev("conv-L1", "lead.converted", -800, lead_id="L1", deal_id="D1"),
        deal_created("D1", 5_000), moved("D1", "meeting", -500), ev("won-D1", "deal.won", -100, deal_id="D1", pipeline="sales"),
        deal_created("D2", 27_600, stage="meeting"),  # open, 12 % by the stage default
        deal_created("D3", 34_500, stage="meeting"), moved("D3", "proposal"),  # open, 83 %
        deal_created("D4", 1_000, lead="L2"), ev("lost-D4", "deal.lost", -60, deal_id="D4", pipeline="sales",
                                                reason="Went with a competitor"),
    ]
    status, body = await post_events(stack.url, events)
    assert status == 202, body

    totals = await wait_for_hash(redis_client, "salespulse:pipeline:pipeline:sales:all",
                                 {"won": "1", "lost": "1", "deals_created": "4", "entries:meeting": "3"})
    assert float(totals["win_rate"]) == 0.5 and float(totals["won_amount:USD"]) == 5_000  # filled from the deal
    assert float(totals["conversion:new>meeting"]) == pytest.approx(3 / 2)  # 2 entries into new, 3 into meeting
    assert float(totals["lost_reason:other"]) == 1
    opened = await wait_for_hash(redis_client, "salespulse:pipeline:open:pipeline:sales", {"deals": "2"})
    assert float(opened["weighted:USD"]) == pytest.approx(3_312 + 28_635)
    assert float(opened["amount:proposal:USD"]) == 34_500
    # The lead partitions learn from the deal partitions (deal.lead_linked / lead.deal_closed through Kafka).
    source = await wait_for_hash(redis_client, "salespulse:pipeline:source:ads:all",
                                 {"leads": "2", "opportunities": "2", "customers": "1", "mql_customers": "1"})
    assert float(source["lead_to_customer"]) == 0.5 and float(source["mql_to_customer"]) == 1
    month = await wait_for_hash(redis_client, f"salespulse:pipeline:rep:rep-1:month:{PERIOD}",
                                {"quota:USD": "100000", "won_amount:USD": "5000"})
    assert float(month["quota_attainment:USD"]) == 0.05 and float(month["quota_gap:USD"]) == 95_000

    text = await metrics_text(stack.url)
    assert metric_value(text, "salespulse_stage_entries_total", pipeline="sales", stage="meeting") == 3
    assert metric_value(text, "salespulse_stage_transitions_total", pipeline="sales", from_stage="new",
                        to_stage="meeting", direction="forward") == 1
    assert metric_value(text, "salespulse_deals_closed_total", pipeline="sales", outcome="won", rep="rep-1") == 1
    assert metric_value(text, "salespulse_revenue_won_total", pipeline="sales", rep="rep-1", currency="USD") == 5_000
    assert metric_value(text, "salespulse_deals_lost_reasons_total", pipeline="sales", reason="other") == 1
    assert metric_value(text, "salespulse_open_deals", pipeline="sales", stage="meeting") == 1
    assert metric_value(text, "salespulse_open_pipeline_amount", pipeline="sales", stage="proposal", currency="USD") == 34_500
    assert metric_value(text, "salespulse_weighted_pipeline_amount", pipeline="sales", currency="USD") == pytest.approx(31_947)
    assert metric_value(text, "salespulse_sales_cycle_seconds_count", pipeline="sales") == 1
    assert metric_value(text, "salespulse_time_in_stage_seconds_count", pipeline="sales", stage="new") == 2
    assert metric_value(text, "salespulse_quota_amount", rep="rep-1", period=PERIOD, currency="USD") == 100_000

    latest = await wait_for_topic_records(
        fresh_broker.bootstrap, metrics_topic("pipeline"),
        lambda got: any(r["scope"] == "pipeline" and r["window"] == "now" for r in got.values()),
    )
    assert {r["family"] for r in latest.values()} == {"pipeline"}


async def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path,
    unique_id: str, config_file: Path,
) -> None:
    env = env_for(fresh_broker, redis_server, unique_id, config_file)
    first_half = []
    for i in range(20):
        first_half += [deal_created(f"K{i}", 1_000), moved(f"K{i}", "meeting")]
    second_half = [ev(f"won-K{i}", "deal.won", -10, deal_id=f"K{i}", pipeline="sales") for i in range(8)]
    second_half += [ev(f"lost-K{i}", "deal.lost", -10, deal_id=f"K{i}", pipeline="sales", reason="price")
                    for i in range(8, 14)]
    second_half += [ev(f"lead-M{i}", "lead.created", -900, lead_id=f"M{i}", rep_id="rep-1", source="web")
                    for i in range(5)]
    second_half += [ev(f"conv-M{i}", "lead.converted", -800, lead_id=f"M{i}", deal_id=f"K{i}") for i in range(5)]

    first = SalespulseProcess("run", tmp_path / "run1.log", env)
    first.start()
    try:
        await first.wait_ready()
        assert (await post_events(first.url, first_half))[0] == 202
        assert (await post_events(first.url, second_half[:10]))[0] == 202
        await wait_for_hash(redis_client, "salespulse:pipeline:pipeline:sales:all", {"deals_created": "20"})
    finally:
        first.kill()  # SIGKILL: whatever was in flight is replayed by the next worker

    second = SalespulseProcess("run", tmp_path / "run2.log", env)
    second.start()
    try:
        await second.wait_ready()
        # the CRM retries everything it is unsure of, and sends the rest
        assert (await post_events(second.url, first_half + second_half))[0] == 202
        totals = await wait_for_hash(
            redis_client, "salespulse:pipeline:pipeline:sales:all",
            {"deals_created": "20", "entries:new": "20", "entries:meeting": "20", "won": "8", "lost": "6",
             "won_amount:USD": "8000", "transition:new>meeting": "20"}, timeout_s=40,
        )
        assert float(totals["win_rate"]) == pytest.approx(8 / 14)
        await wait_for_hash(redis_client, "salespulse:pipeline:open:pipeline:sales", {"deals": "6", "deals:meeting": "6"})
        await wait_for_hash(redis_client, "salespulse:pipeline:source:web:all",
                            {"leads": "5", "opportunities": "5", "customers": "5"}, timeout_s=40)
        text = await metrics_text(second.url)
        assert metric_value(text, "salespulse_deals_closed_total", pipeline="sales", outcome="won", rep="rep-1") == 8
        assert metric_value(text, "salespulse_stage_entries_total", pipeline="sales", stage="new") == 20
        assert metric_value(text, "salespulse_open_deals", pipeline="sales", stage="meeting") == 6
    finally:
        second.stop()
