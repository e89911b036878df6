"""Benchmark alert lateness with ~100,000 alert clocks pending at once and every rule on.

One run, fresh embedded Tansu + Redis, a real ``salespulse worker`` subprocess with a config that turns on
every rule (issue 13), each with the same window W = ``--clocks / --rate`` seconds:
1. ``--clocks`` clocks are fed live at ``--rate`` per second, interleaved: 40 % new leads nobody touches
   (``lead_response_sla`` at W and ``lead_response_warning`` at 0.8 W: two clocks each), 30 % new deals
   that never leave their stage (``deal_stalled``), 30 % leads called once (``lead_going_cold``; the calls
   are also their reps' activity, so ``rep.active`` follow-ups flow). 100 more reps of ``[teams]`` never
   act: ``rep_no_activity`` fires for all of them at one minute (``by``), after the feed. When the first
   deadline passes, every clock fed is pending; from then on alerts fall due at ``--rate`` per second.
2. Every ``firing`` alert is received on the Redis channel ``salespulse:alerts``; lateness per rule is
   ``emitted_at - deadline`` (when the clock fired it) and ``received - deadline`` (when a subscriber had it).
3. At the end ``salespulse.alerts`` is read back: exactly one ``firing`` per entity and rule.

    .venv/bin/python bench/bench_alerts.py --clocks 100000 --rate 2000
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
from datetime import datetime, timedelta, timezone
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
from salespulse.outputs.alerts import clock_id  # noqa: E402
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


#: Each rule's share of the clocks (the warnings come with the SLA leads: one more clock each).
SHARES = {"lead_response_sla": 0.4, "deal_stalled": 0.3, "lead_going_cold": 0.3}
ACTIVE_REPS, IDLE_REPS, TEAMS = 200, 100, 10


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def sla_lead(run_id: str, n: int) -> tuple[str, dict]:
    """A new lead nobody touches: its SLA breach (and its pre-breach warning) fall due."""
    lead_id = f"lead-{run_id}-{n}"
    return lead_id, {"event_id": f"c-{lead_id}", "type": "lead.created", "occurred_at": now_iso(), "lead_id": lead_id,
                     "rep_id": f"rep-{n % ACTIVE_REPS:03d}", "team": f"team-{n % TEAMS}", "source": "bench"}


def stalled_deal(run_id: str, n: int) -> tuple[str, dict]:
    """A new deal that never leaves its stage: ``deal_stalled`` falls due."""
    deal_id = f"deal-{run_id}-{n}"
    return deal_id, {"event_id": f"d-{deal_id}", "type": "deal.created", "occurred_at": now_iso(), "deal_id": deal_id,
                     "pipeline": "bench", "stage": "open", "rep_id": f"rep-{n % ACTIVE_REPS:03d}", "team": f"team-{n % TEAMS}"}


def cold_lead(run_id: str, n: int) -> tuple[str, dict]:
    """A lead called once and never again: ``lead_going_cold`` falls due (the call is also the rep's activity)."""
    lead_id = f"cold-{run_id}-{n}"
    return lead_id, {"event_id": f"k-{lead_id}", "type": "call.logged", "occurred_at": now_iso(), "lead_id": lead_id,
                     "rep_id": f"rep-{n % ACTIVE_REPS:03d}", "team": f"team-{n % TEAMS}", "outcome": "no_answer"}


GENERATORS = {"lead_response_sla": sla_lead, "deal_stalled": stalled_deal, "lead_going_cold": cold_lead}


def config_toml(window_s: float, by: datetime) -> str:
    """Every rule on, each with the same window; the idle reps' deadline is the minute ``by`` (UTC)."""
    days = window_s / 86400
    reps = {f"rep-{i:03d}": f"team-{i % TEAMS}" for i in range(ACTIVE_REPS)}
    reps |= {f"idle-{i:03d}": f"team-{i % TEAMS}" for i in range(IDLE_REPS)}
    roster = "\n".join(f'"{rep}" = "{team}"' for rep, team in reps.items())
    return (f'[teams]\n{roster}\n[pipelines.bench]\nstages = ["open"]\nstalled_after_days = {{ open = {days!r} }}\n'
            f'[alerts.lead_going_cold]\ndays = {days!r}\n[alerts.rep_no_activity]\nby = "{by:%H:%M}"\n')


async def run(args: argparse.Namespace) -> dict:
    feed_s = args.clocks / args.rate
    window_s = int(round(feed_s))
    run_dir = Path(f"/tmp/salespulse-bench-alerts-{uuid.uuid4().hex[:8]}")
    run_dir.mkdir(parents=True)
    by = (datetime.now(timezone.utc) + timedelta(seconds=window_s + 90)).replace(second=0, microsecond=0)
    (run_dir / "salespulse.toml").write_text(config_toml(window_s, by))
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
            "SALESPULSE_LEAD_RESPONSE_SLA_SECONDS": str(window_s),
            "SALESPULSE_DATA_DIR": str(run_dir / "data"),
            "SALESPULSE_CONFIG": str(run_dir / "salespulse.toml"),
        }
        log = open(run_dir / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "salespulse", "worker", "--loglevel", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        counts = {rule: int(args.clocks * share) for rule, share in SHARES.items()}
        expected = {**counts, "lead_response_warning": counts["lead_response_sla"], "rep_no_activity": IDLE_REPS}
        try:
            await wait_ready(url, worker)
            client = aioredis.Redis.from_url(redis_server.url)
            pubsub = client.pubsub()
            await pubsub.subscribe("salespulse:alerts")
            received: dict[tuple[str, str], tuple[float, dict]] = {}

            async def listen() -> None:
                while len(received) < sum(expected.values()):
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        alert = orjson.loads(message["data"])
                        if alert["status"] == "firing":
                            received.setdefault((alert["alert"], clock_id(alert)), (time.time(), alert))

            listener = asyncio.create_task(listen())
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            await producer.start()
            run_id = uuid.uuid4().hex[:6]
            started = time.time()
            sent = 0
            plan = [rule for rule, n in counts.items() for _ in range(n)]
            plan = [plan[(i * 7919) % len(plan)] for i in range(len(plan))] if len(plan) % 7919 else plan  # interleaved
            peak_awaiting = 0.0
            async with aiohttp.ClientSession() as session:
                while sent < len(plan):
                    due = min(len(plan), int((time.time() - started) * args.rate) + 1)
                    while sent < due:
                        key, event = GENERATORS[plan[sent]](run_id, sent)
                        await producer.send(EVENTS_TOPIC, key=key.encode(), value=orjson.dumps(event))
                        sent += 1
                    await asyncio.sleep(0.005)
                feed_done = time.time()
                console.print(f"fed {sent} clocks in {feed_done - started:.1f} s (window {window_s} s; idle reps due {by:%H:%M} UTC)")
                await producer.stop()
                deadline = max(feed_done + window_s, by.timestamp()) + args.timeout
                while len(received) < sum(expected.values()) and time.time() < deadline:
                    try:
                        peak_awaiting = max(peak_awaiting, await awaiting_now(session, url))
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(1.0)
            listener.cancel()
            await pubsub.aclose()
            await client.aclose()
            alerts_in_topic = [orjson.loads(v) for _, v in await read_topic(broker.bootstrap, ALERTS_TOPIC, idle_s=3, timeout_s=180)]
        finally:
            worker.terminate()
            worker.wait(30)
    rules: dict[str, dict] = {}
    for rule, want in expected.items():
        got = [(at, a) for (name, _), (at, a) in received.items() if name == rule]
        firing = [a for a in alerts_in_topic if a["alert"] == rule and a["status"] == "firing"]
        rules[rule] = {
            "expected": want,
            "received": len(got),
            "firing_in_topic": len(firing),
            "distinct_firing_in_topic": len({clock_id(a) for a in firing}),
            "emitted_minus_deadline_s": summary([iso_to_epoch(a["emitted_at"]) - iso_to_epoch(a["deadline"]) for _, a in got]),
            "received_minus_deadline_s": summary([at - iso_to_epoch(a["deadline"]) for at, a in got]),
        }
    every = [at - iso_to_epoch(a["deadline"]) for at, a in received.values()]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clocks": args.clocks,
        "clocks_pending_at_first_deadline": sum(expected.values()),
        "rate": args.rate,
        "window_s": window_s,
        "partitions": args.partitions,
        "load_average": os.getloadavg(),
        "peak_awaiting": peak_awaiting,
        "received_minus_deadline_s": summary(every),
        "rules": rules,
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
    parser.add_argument("--clocks", type=int, default=100_000, help="alert clocks fed (leads, deals, leads called once)")
    parser.add_argument("--rate", type=float, default=2000.0, help="clocks fed per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0, help="extra seconds to wait for the last alerts")
    parser.add_argument("--output", type=Path, default=Path("bench/results/alerts-latest.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    table = Table(title=f"Alert lateness, every rule on: {result['clocks']} clocks fed at {result['rate']:.0f}/s, "
                        f"window {result['window_s']} s")
    for column in ("rule", "expected", "received", "firing in topic (distinct)"):
        table.add_column(column)
    for q in ("p50", "p90", "p99", "max"):
        table.add_column(f"received {q} s", justify="right")
    for rule, row in result["rules"].items():
        late = row["received_minus_deadline_s"]
        table.add_row(rule, str(row["expected"]), str(row["received"]),
                      f"{row['firing_in_topic']} ({row['distinct_firing_in_topic']})",
                      *(f"{late.get(q, float('nan')):.3f}" for q in ("p50", "p90", "p99", "max")))
    console.print(table)
    every = result["received_minus_deadline_s"]
    console.print(f"every rule: received − deadline p99 {every.get('p99', float('nan')):.3f} s; "
                  f"peak awaiting {result['peak_awaiting']:.0f}; load average {result['load_average']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
