#!/usr/bin/env python
"""Month-scale state benchmark of the salespulse worker (issue 14; see bench/README.md).

One run on a fresh embedded Tansu broker and Redis, over a month of history:

1. workload: ``--events`` records (default 1,000,000; 200k and 3M are the other sizes of the issue)
   from the simulator's TrafficModel for ``--reps`` (300) reps, ``occurred_at`` spread over
   ``--days`` (30), ~1 % redelivered duplicates; cached on disk, since generating 1M takes a minute;
2. baseline B: bare Faust iteration (``bench/bare_faust.py``) over the first ``--baseline-events``;
3. the worker (all four families, all publishers) consumes the month: events/s (÷ B), then its RSS
   holding that state, and Redis checked against the expected per-rep activity totals;
4. restart: the worker stopped (SIGTERM) and started again with the same app id and data directory:
   seconds from launch to ``/readyz`` and to a probe on every partition being in Redis;
5. failover: a second worker joins (its own data directory), then one of the two is SIGKILLed:
   seconds from the kill to a probe on every partition being in Redis;
6. latency: live traffic at ``--rate`` (5,000) events/s with probes; produce → Redis per family's key
   (a probe is a lead created, called and given a deal by rep ``probe-<i>``: the rep's key of each of
   the four families).

Ratios are taken against baselines measured in the same run; the load average is recorded with each
phase (the machine is small and shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_worker as bw  # noqa: E402
import aiohttp  # noqa: E402
import orjson  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from salespulse.embedded.broker import EmbeddedBroker  # noqa: E402
from salespulse.embedded.redis_server import EmbeddedRedis  # noqa: E402
from salespulse.models.events import EventAdapter, event_to_json  # noqa: E402
from salespulse.topics import EVENTS_TOPIC, ensure_topics  # noqa: E402

TARGETS = {
    "events_per_s": 20_000,
    "ratio_to_bare_faust": 2.0,
    "rss_mb": 500,
    "restart_s": 10.0,
    "failover_s": 10.0,
    "p99_ms": 250.0,
}
FAMILIES = ("activity", "engagement", "lead_response", "pipeline")
CACHE = Path(tempfile.gettempdir()) / "salespulse-bench-month"
log = bw.log


def kafka_connection(bootstrap: str) -> Any:
    """What ``ensure_topics`` takes: a ``KafkaConnection`` (a bootstrap string before they existed: A/B runs)."""
    try:
        from salespulse.kafka_connection import KafkaConnection
    except ImportError:
        return bootstrap
    return KafkaConnection.plaintext(bootstrap)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


# ------------------------------------------------------------------------------------------- workload


def month_workload(n: int, seed: int, reps: int, teams: int, dup_rate: float, days: float) -> bw.Workload:
    """``n`` records over the last ``days`` days (cached per parameters for a day: generation is slow)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"month-{n}-{seed}-{reps}-{teams}-{dup_rate}-{days}.pickle"
    if path.exists() and time.time() - path.stat().st_mtime < 86400:
        with path.open("rb") as fh:
            cached: bw.Workload = pickle.load(fh)
        return cached
    workload = bw.build_workload(n, seed, reps, teams, dup_rate, time.time(), span_s=days * 86400)
    with path.open("wb") as fh:
        pickle.dump(workload, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return workload


# ------------------------------------------------------------------------------------------- probes


def probe_events(tag: str, i: int, at: float) -> list[tuple[bytes, bytes]]:
    """A probe: rep ``probe-<tag>-<i>`` gets a lead (created, then called) and a deal; (key, value) each.

    The call lands in the activity and engagement families, the lead in lead response, the deal in
    pipeline: each family then writes a key of that rep.
    """
    occurred = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    rep, lead, deal = f"probe-{tag}-{i}", f"probe-lead-{tag}-{i}", f"probe-deal-{tag}-{i}"
    common = {"occurred_at": occurred, "rep_id": rep, "team": "team-probe", "source": "probe"}
    events = [
        {"event_id": f"{lead}-c", "type": "lead.created", "lead_id": lead, **common},
        {"event_id": f"{lead}-k", "type": "call.logged", "lead_id": lead, "outcome": "connected",
         "duration_s": 30.0, **common},
        {"event_id": f"{deal}-d", "type": "deal.created", "deal_id": deal, "pipeline": "default",
         "stage": "qualified", "amount": 1000.0, **common},
    ]  # fmt: skip
    out = []
    for d in events:
        event = EventAdapter.validate_python(d)
        out.append((event.partition_key.encode(), event_to_json(event)))
    return out


_PROBE_KEY = re.compile(r"salespulse:(activity|engagement|lead_response|pipeline):rep:probe-([a-z0-9]+)-(\d+):")


class ProbeListener:
    """A thread subscribed to ``salespulse:updates``: when each probe's key of each family first appeared."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.seen: dict[tuple[str, int], dict[str, float]] = {}  # (tag, i) -> family -> time
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="probe-listener", daemon=True)

    def __enter__(self) -> "ProbeListener":
        self._thread.start()
        self._subscribed.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _listen(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(bw.UPDATES_CHANNEL)
        self._subscribed.set()
        try:
            while not self._stop.is_set():
                msg = pubsub.get_message(timeout=0.5)
                if msg is None:
                    continue
                now = time.time()
                data = msg["data"]
                if b"probe-" not in data:
                    continue
                for update in orjson.loads(data).get("updates", []):
                    m = _PROBE_KEY.match(update.get("key", ""))
                    if m is not None:
                        self.seen.setdefault((m[2], int(m[3])), {}).setdefault(m[1], now)
        finally:
            pubsub.close()
            client.close()

    def complete(self, tag: str, i: int, families: tuple[str, ...] = FAMILIES) -> float | None:
        """When the last of the probe's family keys appeared, or None while one is missing."""
        got = self.seen.get((tag, i), {})
        return max(got[f] for f in families) if all(f in got for f in families) else None


async def probe_every_partition(
    producer: AIOKafkaProducer, listener: ProbeListener, partitions: int, timeout_s: float, started: float
) -> dict[str, Any]:
    """Send probes until every partition has one, then wait until all are in Redis; seconds from ``started``."""
    tag = uuid.uuid4().hex[:6]
    covered: dict[int, int] = {}  # partition of the probe's lead -> probe index
    i = 0
    while len(covered) < partitions and i < 64:
        sent = [await producer.send(EVENTS_TOPIC, key=k, value=v) for k, v in probe_events(tag, i, time.time())]
        partition = (await sent[0]).partition
        covered.setdefault(partition, i)
        i += 1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [listener.complete(tag, j) for j in covered.values()]
        if all(t is not None for t in done):
            return {"seconds": round(max(done) - started, 2), "partitions": sorted(covered)}  # type: ignore[type-var]
        await asyncio.sleep(0.05)
    return {"seconds": None, "partitions": sorted(covered), "timed_out_after_s": timeout_s}


async def wait_ready(worker: bw.WorkerProcess, timeout_s: float) -> float | None:
    """Seconds until the worker's /readyz answers 200, None on timeout."""
    started = time.perf_counter()
    url = f"http://127.0.0.1:{worker.port}/readyz"
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout_s:
            worker.check_alive()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
    return None


# ------------------------------------------------------------------------------------------- live


@dataclass
class Live:
    sent: dict[int, float] = field(default_factory=dict)  # probe index -> produce time
    events: int = 0
    duration_s: float = 0.0


async def live_traffic(
    bootstrap: str, listener: ProbeListener, args: argparse.Namespace, tag: str
) -> tuple[Live, dict[str, Any]]:
    """``args.rate`` events/s of month traffic for ``args.live_seconds`` plus a probe every ``--probe-interval-ms``."""
    total = int(args.rate * args.live_seconds) + 10
    dicts = bw._traffic(args.seed + 7, total, args.reps, args.teams, time.time(), f"live-{tag}")
    live = Live()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        start = time.time() + 0.2
        values = []
        for i, d in enumerate(dicts):
            d["occurred_at"] = datetime.fromtimestamp(start + i / args.rate, UTC).isoformat(timespec="milliseconds")
            event = EventAdapter.validate_python(d)
            values.append((event.partition_key.encode(), event_to_json(event)))
        start = max(start, time.time())
        pending = []
        interval = args.probe_interval_ms / 1000
        while (elapsed := time.time() - start) < args.live_seconds:
            due = min(int(elapsed * args.rate), len(values))
            while live.events < due:
                key, value = values[live.events]
                pending.append(await producer.send(EVENTS_TOPIC, key=key, value=value))
                live.events += 1
            while len(live.sent) <= elapsed / interval:
                i = len(live.sent)
                live.sent[i] = time.time()
                for key, value in probe_events(tag, i, live.sent[i]):
                    pending.append(await producer.send(EVENTS_TOPIC, key=key, value=value))
            await asyncio.sleep(0.005)
        live.duration_s = time.time() - start
        await producer.flush()
        await asyncio.gather(*pending, return_exceptions=True)
        deadline = time.time() + 10
        while time.time() < deadline and any(listener.complete(tag, i) is None for i in live.sent):
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    per_family: dict[str, Any] = {}
    for family in FAMILIES:
        lat = [
            1000 * (listener.seen[(tag, i)][family] - sent)
            for i, sent in live.sent.items()
            if family in listener.seen.get((tag, i), {})
        ]
        per_family[family] = bw.latency_percentiles(lat, len(live.sent) - len(lat))
    return live, per_family


# ------------------------------------------------------------------------------------------- run


def worker(broker: EmbeddedBroker, rs: EmbeddedRedis, args: argparse.Namespace, app_id: str, name: str,
           run_dir: Path, data_dir: Path) -> bw.WorkerProcess:
    env = dict(item.split("=", 1) for item in args.worker_env)
    env["SALESPULSE_DATA_DIR"] = str(data_dir)
    return bw.WorkerProcess(broker, rs.url, args.partitions, app_id, run_dir / f"{name}.log", None, env)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="salespulse-month-"))
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "load_avg_at_start": load()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "code": bw.code_version(),
        "run_dir": str(run_dir),
        "targets": TARGETS,
    }
    log(f"logs and scratch files in {run_dir}")
    t0 = time.perf_counter()
    workload = month_workload(args.events, args.seed, args.reps, args.teams, args.dup_rate, args.days)
    n = len(workload.records)
    results["workload"] = {
        "records": n,
        "unique_events": workload.unique,
        "redelivered_duplicates": workload.duplicates,
        "distinct_activities": workload.activities,
        "reps_with_activity": len(workload.per_rep),
        "mix": workload.mix,
        "occurred_at_span": workload.span,
        "seconds_to_build_or_load": round(time.perf_counter() - t0, 1),
    }
    log(f"workload: {n:,} records over {workload.span}, {len(workload.per_rep)} reps")
    with EmbeddedBroker(log_path=run_dir / "tansu.log") as broker, EmbeddedRedis(log_path=run_dir / "redis.log") as rs:
        await ensure_topics(kafka_connection(broker.bootstrap), args.partitions)
        seconds, _ = await bw.preload(broker.bootstrap, workload.records)
        results["preload_s"] = round(seconds, 1)
        log(f"pre-loaded {n:,} records in {seconds:.0f}s")
        infra = {"broker": broker.pid, "redis": rs.pid}

        if not args.skip_baseline:
            b_n = min(n, args.baseline_events)
            results["baseline_b"] = await bw.baseline_faust(broker.url, b_n, args.partitions, run_dir, args.timeout)
            results["baseline_b"]["load_avg"] = load()
            log(f"baseline B: {results['baseline_b']['events_per_s']:,.0f} events/s over {b_n:,}")

        redis_client = aioredis.Redis.from_url(rs.url)
        app_id = f"bench-month-{uuid.uuid4().hex[:8]}"
        data_a = run_dir / "data-a"
        w = worker(broker, rs, args, app_id, "worker", run_dir, data_a)
        try:
            cpu = bw.CpuMeter({"worker": w.pid, **infra})
            entry = await w.count_to(n, args.timeout, 1.0, cpu)
            entry["load_avg"] = load()
            await asyncio.sleep(2.0)  # a flush and a commit after the last batch
            entry["rss_mb"] = rss_mb(w.pid)
            entry["broker_rss_mb"] = rss_mb(broker.pid)
            results["worker"] = entry
            b = results.get("baseline_b", {}).get("events_per_s")
            entry["ratio_to_b"] = round(entry["events_per_s"] / b, 2) if b and entry["events_per_s"] else None
            log(f"worker: {entry['events_per_s'] or 0:,.0f} events/s (÷B {entry['ratio_to_b']}), RSS {entry['rss_mb']}")
            # At 3M the changelog producer is still draining commits well after the last batch is counted
            # (its buffer full), and Redis gets a batch's values only after its commit: wait for that.
            results["correctness"] = await bw.verify_redis(redis_client, workload, timeout_s=args.settle_timeout)
            log(f"correctness: ok={results['correctness']['ok']}")
        finally:
            w.stop()

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            with ProbeListener(rs.url) as listener:
                # --- restart: same app id and data directory, after a clean stop
                launched = time.time()
                w = worker(broker, rs, args, app_id, "worker-restart", run_dir, data_a)
                ready = await wait_ready(w, args.timeout)
                probed = await probe_every_partition(producer, listener, args.partitions, args.timeout, launched)
                results["restart"] = {
                    "to_readyz_s": round(ready, 2) if ready is not None else None,
                    "to_probes_in_redis_s": probed["seconds"],
                    "partitions_probed": probed["partitions"],
                    "rss_mb": rss_mb(w.pid),
                    "load_avg": load(),
                }
                log(f"restart: {results['restart']}")

                # --- failover: a second worker joins, then one is SIGKILLed
                if not args.skip_failover:
                    w2 = worker(broker, rs, args, app_id, "worker-second", run_dir, run_dir / "data-b")
                    try:
                        joined = time.time()
                        # Ready = joined, the rebalance over and its share of the state recovered.
                        second_ready = await wait_ready(w2, args.timeout)
                        split = await probe_every_partition(producer, listener, args.partitions, args.timeout, joined)
                        await asyncio.sleep(2.0)  # a commit and its changelog writes after the split
                        killed = time.time()
                        os.kill(w2.pid, signal.SIGKILL)
                        over = await probe_every_partition(producer, listener, args.partitions, args.timeout, killed)
                        results["failover"] = {
                            "second_worker_to_readyz_s": None if second_ready is None else round(second_ready, 2),
                            "join_to_probes_in_redis_s": split["seconds"],
                            "kill_to_probes_in_redis_s": over["seconds"],
                            "survivor_rss_mb": rss_mb(w.pid),
                            "load_avg": load(),
                        }
                        log(f"failover: {results['failover']}")
                    finally:
                        w2.stop()

                # --- latency under live load, per family's key
                if not args.skip_latency:
                    await asyncio.sleep(2.0)
                    cpu = bw.CpuMeter({"worker": w.pid, "bench": os.getpid(), **infra})
                    cpu.start()
                    live, per_family = await live_traffic(broker.bootstrap, listener, args, uuid.uuid4().hex[:6])
                    results["latency"] = {
                        "rate": args.rate,
                        "achieved_rate": round(live.events / live.duration_s, 1),
                        "probes": len(live.sent),
                        "redis_ms_by_family": per_family,
                        "cpu_percent": cpu.stop(),
                        "rss_mb_after": rss_mb(w.pid),
                        "load_avg": load(),
                    }
                    log(f"latency: {per_family}")
                w.stop()
        finally:
            await producer.stop()
            await redis_client.aclose()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["verdict"] = verdict(results, n)
    return results


def verdict(r: dict[str, Any], n: int) -> dict[str, Any]:
    """Each target of the issue: the figure measured and whether it is met (None: not measured)."""
    w = r.get("worker", {})
    p99s = [f["p99"] for f in r.get("latency", {}).get("redis_ms_by_family", {}).values()]

    def at_most(value: float | None, target: float) -> dict[str, Any]:
        return {"measured": value, "target": target, "met": None if value is None else value <= target}

    return {
        "events_per_s": {"measured": w.get("events_per_s"), "target": TARGETS["events_per_s"],
                         "met": (w.get("events_per_s") or 0) >= TARGETS["events_per_s"]},
        "ratio_to_bare_faust": {"measured": w.get("ratio_to_b"), "target": TARGETS["ratio_to_bare_faust"],
                                "met": None if w.get("ratio_to_b") is None
                                else w["ratio_to_b"] >= TARGETS["ratio_to_bare_faust"]},
        "rss_mb": at_most(w.get("rss_mb", {}).get("VmRSS"), TARGETS["rss_mb"]),
        "rss_bytes_per_event": round(w["rss_mb"]["VmRSS"] * 2**20 / n) if w.get("rss_mb") else None,
        "restart_s": at_most(r.get("restart", {}).get("to_probes_in_redis_s"), TARGETS["restart_s"]),
        "failover_s": at_most(r.get("failover", {}).get("kill_to_probes_in_redis_s"), TARGETS["failover_s"]),
        "p99_ms_worst_family": at_most(
            None if not p99s or None in p99s else max(p99s), TARGETS["p99_ms"]
        ),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Month-scale state benchmark: throughput (÷ bare Faust), RSS, restart, failover and "
        "produce→Redis latency per family over a month of history.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="records of history (200000, 1000000, 3000000)")
    parser.add_argument("--days", type=float, default=30.0, help="days the history's occurred_at spans")
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--teams", type=int, default=15)
    parser.add_argument("--dup-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--baseline-events", type=int, default=300_000,
                        help="records bare Faust iterates (a per-event cost: it holds no state)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=5000.0, help="live events/s in the latency phase")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--probe-interval-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after (s)")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="how long Redis may take to hold the history's totals after the last event is counted (s)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra worker environment (repeatable), e.g. for an A/B of a setting")  # fmt: skip
    parser.add_argument("--output", type=Path, default=bw.ROOT / "bench" / "results" / "month-latest.json")
    args = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    bw.console.print_json(data={"verdict": results["verdict"]})
    log(f"wrote {args.output} (run took {results['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
