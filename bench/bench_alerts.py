"""Benchmark SLA alert lateness with ~100,000 leads awaiting a first touch at once.

One run, fresh embedded Tansu + Redis, a real ``salespulse worker`` subprocess:
1. ``lead.created`` events are produced live at ``--rate`` per second for ``--leads / --rate`` seconds
   (``occurred_at`` = now), with the SLA equal to that duration, so when the first deadline passes
   every lead is awaiting; from then on alerts fall due at ``--rate`` per second.
2. Every ``firing`` alert is received on the Redis channel ``salespulse:alerts``; lateness is
   reported two ways: ``emitted_at - deadline`` (the contract field, when the clock fired it) and
   ``received - deadline`` (when a subscriber had it).
3. At the end ``salespulse.alerts`` is read back: exactly one ``firing`` per lead.

    .venv/bin/python bench/bench_alerts.py --leads 100000 --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salespulse.embedded.broker import EmbeddedBroker  # noqa: E402
from salespulse.embedded.ports import free_port  # noqa: E402
from salespulse.embedded.redis_server import EmbeddedRedis  # noqa: E402
from salespulse.kafka_connection import KafkaConnection  # noqa: E402
from salespulse.topics import ALERTS_TOPIC, EVENTS_TOPIC, ensure_topics  # noqa: E402
from tests.integration.stack import read_topic  # noqa: E402

console = Console()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def iso_to_epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("worker exited during start-up")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("worker not ready")


async def awaiting_now(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("salespulse_leads_awaiting_response{")
    )


async def run(args: argparse.Namespace) -> dict:
    feed_s = args.leads / args.rate
    sla_s = int(round(feed_s))
    run_dir = Path(f"/tmp/salespulse-bench-alerts-{uuid.uuid4().hex[:8]}")
    run_dir.mkdir(parents=True)
    with EmbeddedBroker(log_path=run_dir / "tansu.log") as broker, EmbeddedRedis(log_path=run_dir / "redis.log") as redis_server:
        await ensure_topics(KafkaConnection.plaintext(broker.bootstrap), args.partitions)
        port = free_port()
        env = {
            **os.environ,
            "SALESPULSE_KAFKA_URL": broker.url,
            "SALESPULSE_REDIS_URL": redis_server.url,
            "SALESPULSE_TANSU_COMPAT": "true",
            "SALESPULSE_APP_ID": f"bench-alerts-{uuid.uuid4().hex[:8]}",
            "SALESPULSE_HTTP_PORT": str(port),
            "SALESPULSE_PARTITIONS": str(args.partitions),
            "SALESPULSE_LEAD_RESPONSE_SLA_SECONDS": str(sla_s),
            "SALESPULSE_DATA_DIR": str(run_dir / "data"),
        }
        log = open(run_dir / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "salespulse", "worker", "--loglevel", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(url, worker)
            client = aioredis.Redis.from_url(redis_server.url)
            pubsub = client.pubsub()
            await pubsub.subscribe("salespulse:alerts")
            received: dict[str, tuple[float, dict]] = {}

            async def listen() -> None:
                while len(received) < args.leads:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        alert = orjson.loads(message["data"])
                        if alert["status"] == "firing":
                            received.setdefault(alert["lead_id"], (time.time(), alert))

            listener = asyncio.create_task(listen())
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            await producer.start()
            run_id = uuid.uuid4().hex[:6]
            started = time.time()
            sent = 0
            peak_awaiting = 0.0
            async with aiohttp.ClientSession() as session:
                while sent < args.leads:
                    due = min(args.leads, int((time.time() - started) * args.rate) + 1)
                    while sent < due:
                        lead_id = f"lead-{run_id}-{sent}"
                        event = {
                            "event_id": f"c-{lead_id}",
                            "type": "lead.created",
                            "occurred_at": datetime.now(timezone.utc).isoformat(),
                            "lead_id": lead_id,
                            "rep_id": f"rep-{sent % 200:03d}",
                            "team": f"team-{sent % 10}",
                            "source": "bench",
                        }
                        await producer.send(EVENTS_TOPIC, key=lead_id.encode(), value=orjson.dumps(event))
                        sent += 1
                    await asyncio.sleep(0.005)
                feed_done = time.time()
                console.print(f"fed {sent} leads in {feed_done - started:.1f} s (SLA {sla_s} s)")
                await producer.stop()
                deadline = feed_done + sla_s + args.timeout
                while len(received) < args.leads and time.time() < deadline:
                    try:
                        peak_awaiting = max(peak_awaiting, await awaiting_now(session, url))
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(1.0)
            listener.cancel()
            await pubsub.aclose()
            await client.aclose()
            alerts_in_topic = [orjson.loads(v) for _, v in await read_topic(broker.bootstrap, ALERTS_TOPIC, idle_s=3, timeout_s=120)]
        finally:
            worker.terminate()
            worker.wait(30)
    firing = [a for a in alerts_in_topic if a["status"] == "firing"]
    emitted_late = [iso_to_epoch(a["emitted_at"]) - iso_to_epoch(a["deadline"]) for _, a in received.values()]
    received_late = [at - iso_to_epoch(a["deadline"]) for at, a in received.values()]
    series = sorted((iso_to_epoch(a["deadline"]), iso_to_epoch(a["emitted_at"]), at) for at, a in received.values())
    (run_dir / "alerts.json").write_text(json.dumps(series))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "leads": args.leads,
        "rate": args.rate,
        "sla_s": sla_s,
        "partitions": args.partitions,
        "peak_awaiting": peak_awaiting,
        "alerts_received": len(received),
        "firing_in_topic": len(firing),
        "distinct_leads_firing_in_topic": len({a["lead_id"] for a in firing}),
        "emitted_minus_deadline_s": summary(emitted_late),
        "received_minus_deadline_s": summary(received_late),
        "run_dir": str(run_dir),
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="leads created per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0, help="extra seconds to wait for the last alerts")
    parser.add_argument("--output", type=Path, default=Path("bench/results/alerts-latest.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    table = Table(title=f"SLA alert lateness, {result['leads']} leads, {result['rate']:.0f}/s, SLA {result['sla_s']} s")
    table.add_column("measure")
    for q in ("p50", "p90", "p99", "max"):
        table.add_column(q, justify="right")
    for name in ("emitted_minus_deadline_s", "received_minus_deadline_s"):
        row = result[name]
        table.add_row(name, *(f"{row.get(q, float('nan')):.3f}" for q in ("p50", "p90", "p99", "max")))
    console.print(table)
    console.print(
        f"peak awaiting {result['peak_awaiting']:.0f}; alerts received {result['alerts_received']}; firing in topic "
        f"{result['firing_in_topic']} for {result['distinct_leads_firing_in_topic']} distinct leads"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
