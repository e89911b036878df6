"""``salespulse replay`` end to end: it backfills metrics, is idempotent and resumable, and a replayed untouched
lead never alerts while a live one does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.topics import ALERTS_TOPIC, EVENTS_TOPIC, REPLAY_HEADER
from tests.integration.stack import SalespulseProcess, now_iso, post_events, read_topic, stack_env
from tests.integration.test_crm_webhooks import metric_sum, wait_for_metric

pytestmark = pytest.mark.integration
SLA_S = 2


@pytest_asyncio.fixture
async def stack(fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis,
                tmp_path: Path, unique_id: str) -> AsyncIterator[SalespulseProcess]:
    env = stack_env(fresh_broker.url, redis_server.url, f"replay-{unique_id}",
                    SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(SLA_S))
    async with SalespulseProcess("run", tmp_path / "run.log", env) as process:
        yield process


def run_replay(broker: EmbeddedBroker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "salespulse", "replay", *args, "--kafka-url", broker.url],
                          capture_output=True, text=True, timeout=60)


def lead(lead_id: str, at: str) -> dict:
    return {"event_id": f"created-{lead_id}", "type": "lead.created", "occurred_at": at, "lead_id": lead_id,
            "rep_id": "rep-r", "team": "team-r", "source": "import"}


async def headers_by_event_id(bootstrap: str) -> dict[str, list[list[tuple[str, bytes]]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(EVENTS_TOPIC, p) for p in sorted(consumer.partitions_for_topic(EVENTS_TOPIC) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        batch = await consumer.getmany(timeout_ms=2000)
        found: dict[str, list[list[tuple[str, bytes]]]] = {}
        for m in (m for msgs in batch.values() for m in msgs):
            found.setdefault(orjson.loads(m.value)["event_id"], []).append(list(m.headers))
        return found
    finally:
        await consumer.stop()


async def test_replay_backfills_metrics_never_alerts_and_counts_once_when_repeated(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    now = now_iso(-1)
    rows = [lead("L-replayed", now)] + [
        {"event_id": f"replayed-call-{n}", "type": "call.logged", "occurred_at": now, "lead_id": f"L-old-{n}",
         "rep_id": "rep-r", "team": "team-r", "outcome": "connected"} for n in range(3)
    ]
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n{\"type\": \"call.logged\"}\n")
    # A live lead left untouched at the same time: it must alert, so the replayed one's silence means something.
    assert (await post_events(stack.url, {**lead("L-live", now_iso()), "source": "web"}))[0] == 202

    done = run_replay(fresh_broker, str(history))
    assert done.returncode == 1, done.stderr  # the bad last row is reported and skipped
    assert "line 5: field event_id" in done.stderr and "replayed 4 events" in done.stderr
    assert (tmp_path / "history.jsonl.position").read_text().strip() == "5"

    await wait_for_metric(stack.url, "salespulse_activities_total", 3, rep="rep-r", kind="call")
    text = await wait_for_metric(stack.url, "salespulse_leads_created_total", 1, team="team-r", source="import")
    assert metric_sum(text, "salespulse_leads_created_total") == 2

    deadline = time.monotonic() + SLA_S + 15
    alerted: set[str] = set()
    while time.monotonic() < deadline and "L-live" not in alerted:
        alerted = {orjson.loads(v)["lead_id"] for _, v in await read_topic(fresh_broker.bootstrap, ALERTS_TOPIC)}
        await asyncio.sleep(0.5)
    assert "L-live" in alerted
    await asyncio.sleep(SLA_S + 1)
    alerted = {orjson.loads(v)["lead_id"] for _, v in await read_topic(fresh_broker.bootstrap, ALERTS_TOPIC)}
    assert "L-replayed" not in alerted

    # Resuming finds nothing left; --restart sends everything again and the event_id dedup counts it once.
    assert "already replayed" in run_replay(fresh_broker, str(history)).stderr
    again = run_replay(fresh_broker, str(history), "--restart")
    assert "replayed 4 events" in again.stderr
    probe = tmp_path / "probe.jsonl"
    probe.write_bytes(orjson.dumps({"event_id": "probe", "type": "call.logged", "occurred_at": now,
                                    "lead_id": "L-probe", "rep_id": "rep-probe", "outcome": "busy"}))
    assert run_replay(fresh_broker, str(probe)).returncode == 0
    text = await wait_for_metric(stack.url, "salespulse_activities_total", 1, rep="rep-probe")
    assert metric_sum(text, "salespulse_activities_total", rep="rep-r", kind="call") == 3
    # Every copy of a replayed event carries the replay header; the live webhook event does not.
    written = await headers_by_event_id(fresh_broker.bootstrap)
    replayed_ids = ("replayed-", "probe", "created-L-replayed")
    replayed = [headers for event_id, copies in written.items() if event_id.startswith(replayed_ids) for headers in copies]
    assert replayed and all((REPLAY_HEADER, b"1") in headers for headers in replayed)
    assert [(REPLAY_HEADER, b"1") in headers for headers in written["created-L-live"]] == [False]


async def test_replay_of_a_csv_export_maps_columns_and_honours_the_rate(
    stack: SalespulseProcess, fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    export = tmp_path / "calls.csv"
    at = now_iso(-60)
    export.write_text("Id,When,Contact,Owner,Result\n" + "".join(
        f"c{n},{at},lead-{n},rep-csv,{'no_answer' if n % 2 else 'connected'}\n" for n in range(10)))
    started = time.monotonic()
    done = run_replay(fresh_broker, str(export), "--set", "type=call.logged", "--map", "event_id=Id",
                      "--map", "occurred_at=When", "--map", "lead_id=Contact", "--map", "rep_id=Owner",
                      "--map", "outcome=Result", "--rate", "20")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 0.45  # 10 events at 20/s take at least half a second
    text = await wait_for_metric(stack.url, "salespulse_activities_total", 10, rep="rep-csv", kind="call")
    assert metric_sum(text, "salespulse_activities_total", rep="rep-csv", outcome="no_answer") == 5
    bad = run_replay(fresh_broker, str(export), "--restart", "--map", "event_id=Nope")
    assert bad.returncode == 1 and "no column(s) Nope" in bad.stderr


def test_strict_replay_stops_at_the_first_bad_row_and_keeps_the_position_before_it(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    history = tmp_path / "h.jsonl"
    good = {"event_id": "s1", "type": "call.logged", "occurred_at": now_iso(-5), "lead_id": "l", "rep_id": "r",
            "outcome": "busy"}
    history.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({**good, "outcome": "maybe"}) + b"\n"
                        + orjson.dumps({**good, "event_id": "s3"}) + b"\n")
    stopped = run_replay(fresh_broker, str(history), "--strict")
    assert stopped.returncode == 1
    assert "line 2: field outcome" in stopped.stderr and "position kept at line 1" in stopped.stderr
    assert (tmp_path / "h.jsonl.position").read_text().strip() == "1"
