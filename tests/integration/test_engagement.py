"""End to end: engagement and targets through the real CLI (``salespulse run``), broker and Redis.

Webhooks -> ``salespulse.events`` (plus an internal ``lead.deal_closed`` written straight to the topic, as
the pipeline family does) -> worker -> Redis rates with the team's beside them, activity targets and
attainment, ``salespulse_email_events_total``, and ``salespulse.metrics.engagement``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.families.windows import calendar_buckets
from salespulse.topics import EVENTS_TOPIC, metrics_topic
from tests.integration.stack import (
    SalespulseProcess,
    call,
    email,
    metric_value,
    metrics_text,
    now_iso,
    post_events,
    stack_env,
    wait_for_hash,
    wait_for_topic_records,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def stack(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str
) -> AsyncIterator[SalespulseProcess]:
    config = tmp_path / "salespulse.toml"
    config.write_text(
        f'[teams]\n"e1-{unique_id}" = "tx-{unique_id}"\n"e2-{unique_id}" = "tx-{unique_id}"\n'
        f'[targets.default]\nday = {{ call = 4 }}\nmonth = {{ emails_personalized = 8 }}\n'
        f'[targets.reps."e1-{unique_id}"]\nday = {{ email_sent = 2 }}\n'
    )
    env = stack_env(fresh_broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_CONFIG=str(config))
    async with SalespulseProcess("run", tmp_path / "run.log", env) as process:
        yield process


def engagement(kind: str, event_id: str, lead: str, email_id: str, **extra: str) -> dict:
    return {"event_id": event_id, "type": kind, "occurred_at": now_iso(), "lead_id": lead, "email_id": email_id, **extra}


async def test_engagement_rates_team_rates_targets_and_email_events_end_to_end(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, redis_client: aioredis.Redis, unique_id: str
) -> None:
    e1, e2, team = f"e1-{unique_id}", f"e2-{unique_id}", f"tx-{unique_id}"
    events = []
    for i in range(4):  # e1 sends 4 emails, 2 personalised; one opened three times, two replied
        sent = email(f"{unique_id}-m{i}", e1, team, lead=f"{unique_id}-L{i}")
        sent["personalized"] = i < 2
        events.append(sent)
    events += [engagement("email.opened", f"{unique_id}-o{j}", f"{unique_id}-L0", f"mail-{unique_id}-m0") for j in range(3)]
    events += [engagement("email.replied", f"{unique_id}-r{i}", f"{unique_id}-L{i}", f"mail-{unique_id}-m{i}")
               for i in (1, 2)]
    # an open of an email whose send arrives later: counted once it does
    events.append(engagement("email.opened", f"{unique_id}-o9", f"{unique_id}-L9", f"mail-{unique_id}-m9"))
    events += [call(f"{unique_id}-c{i}", e2, team, "connected" if i == 0 else "no_answer", lead=f"{unique_id}-P{i}")
               for i in range(2)]
    assert (await post_events(stack.url, events))[0] == 202
    assert (await post_events(stack.url, email(f"{unique_id}-m9", e2, team, lead=f"{unique_id}-L9")))[0] == 202
    # the pipeline family's internal follow-up: the connected call's lead won its deal
    producer = AIOKafkaProducer(bootstrap_servers=fresh_broker.bootstrap)
    await producer.start()
    try:
        won = {"event_id": f"{unique_id}-w", "type": "lead.deal_closed", "occurred_at": now_iso(1),
               "lead_id": f"{unique_id}-P0", "deal_id": "D1", "pipeline": "default", "outcome": "won", "amount": 100}
        await producer.send_and_wait(EVENTS_TOPIC, key=won["lead_id"].encode(), value=orjson.dumps(won))
    finally:
        await producer.stop()

    rep = await wait_for_hash(
        redis_client,
        f"salespulse:engagement:rep:{e1}:all",
        {"emails_sent": "4", "emails_opened": "1", "open_rate": "0.25", "reply_rate": "0.5", "contact_rate:email": "0.5",
         "emails_personalized": "2", "personalized_share": "0.5"},
    )
    assert "emails_clicked" not in rep
    # the team (e1 and e2: 5 emails, 2 opened, 2 replied) beside the rep
    await wait_for_hash(
        redis_client,
        f"salespulse:engagement:rep:{e1}:all",
        {"team_open_rate": "0.4", "team_reply_rate": "0.4", "team_contact_rate:call": "0.5"},
    )
    await wait_for_hash(
        redis_client,
        f"salespulse:engagement:rep:{e2}:all",
        {"contact_rate:call": "0.5", "conversion_rate:call": "1", "emails_opened": "1", "team_open_rate": "0.4"},
    )
    day, _week, month = calendar_buckets(time.time(), ZoneInfo("UTC"))
    await wait_for_hash(
        redis_client,
        f"salespulse:activity:rep:{e2}:day:{day}",
        {"call": "2", "target:call": "4", "attainment:call": "0.5"},
    )
    await wait_for_hash(
        redis_client,
        f"salespulse:activity:rep:{e1}:day:{day}",
        {"email_sent": "4", "target:email_sent": "2", "attainment:email_sent": "2", "target:call": "4"},
    )
    await wait_for_hash(
        redis_client,
        f"salespulse:engagement:rep:{e1}:month:{month}",
        {"target:emails_personalized": "8", "attainment:emails_personalized": "0.25"},
    )

    text = await metrics_text(stack.url)
    assert metric_value(text, "salespulse_email_events_total", rep=e1, team=team, event="opened") == 1
    assert metric_value(text, "salespulse_email_events_total", rep=e1, team=team, event="replied") == 2
    assert metric_value(text, "salespulse_email_events_total", rep=e2, team=team, event="opened") == 1

    def rep_records(latest: dict[bytes, dict]) -> list[dict]:
        return [r for k, r in latest.items() if k.startswith(f"rep:{e1}:all:p".encode())]

    latest = await wait_for_topic_records(
        fresh_broker.bootstrap, metrics_topic("engagement"),
        lambda got: sum(r["counts"].get("emails_opened", 0) for r in rep_records(got)) == 1,
    )
    record = rep_records(latest)[0]
    assert record["family"] == "engagement" and record["team"] == team
    assert record["team_counts"]["emails_sent"] >= record["counts"]["emails_sent"]
