#!/usr/bin/env python
"""Throughput and latency benchmark of the salespulse worker (see bench/README.md).

One run on a fresh embedded Tansu broker and Redis:

1. pre-load N canonical events (TrafficModel mix, ~200 reps in ~10 teams, ~1 % redelivered duplicates)
   into ``salespulse.events`` with a batching aiokafka producer, keyed like ingest;
2. in-process breakdown (no Kafka): pydantic parsing alone, ``BatchProcessor`` over dict tables, and
   ``ActivityFamily.render``; each as events/s;
3. baseline A: one raw aiokafka consumer, ``getmany`` + ``orjson.loads`` + a dict count per type;
4. baseline B: a bare Faust agent (``take_events(2000, within=0.1)``, raw values, counting only);
5. ``salespulse worker`` as a subprocess, all publishers on, timed from its first counted event to N
   (via ``/metrics``), then checked against Redis;
6. latency: a second worker with a fresh app id replays the backlog (a second throughput sample), then
   live traffic at ``--rate`` events/s with a probe every ``--probe-interval-ms``; the time from a probe's
   produce to its Redis key appearing on ``salespulse:updates`` is the latency.

Ratios are taken against baselines measured in the same run (the machine is small and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import random
import re
import threading
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from salespulse.embedded.broker import EmbeddedBroker  # noqa: E402
from salespulse.embedded.ports import free_port, log_tail, spawn_tied_to_parent, terminate_process  # noqa: E402
from salespulse.embedded.redis_server import EmbeddedRedis  # noqa: E402
from salespulse.families.activity.rules import activity_of  # noqa: E402
from salespulse.models.events import EventAdapter, event_from_json, event_to_json  # noqa: E402
from salespulse.simulate import TrafficModel  # noqa: E402
from salespulse.outputs.redis import RedisPublisher  # noqa: E402
from salespulse.outputs.topics import TopicPublisher  # noqa: E402
from salespulse.kafka_connection import KafkaConnection  # noqa: E402
from salespulse.redis_connection import redis_client_for  # noqa: E402
from salespulse.families.activity.family import ActivityFamily  # noqa: E402
from salespulse.engine.cells import CellStore  # noqa: E402
from salespulse.engine.dedup import DedupIndex  # noqa: E402
from salespulse.families.pipeline.family import PipelineFamily  # noqa: E402
from salespulse.families.pipeline.state import PIPELINE_CODEC
from salespulse.families.engagement.family import EngagementFamily  # noqa: E402
from salespulse.families.engagement.state import OUTREACH_CODEC
from salespulse.families.lead_response.family import LeadResponseFamily  # noqa: E402
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.engine.processor import BatchProcessor  # noqa: E402
from salespulse.engine.record_log import RecordLog  # noqa: E402
from salespulse.config import Config  # noqa: E402
from salespulse.topics import EVENTS_TOPIC, ensure_topics  # noqa: E402
from salespulse.settings import METRIC_FAMILIES, Settings  # noqa: E402

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)

TARGET_EVENTS_PER_S = 10_000
TARGET_P99_MS = 500.0
UPDATES_CHANNEL = "salespulse:updates"
REP_ALL_PATTERN = "salespulse:activity:rep:*:all"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def code_version() -> dict[str, Any]:
    """The commit measured, and whether salespulse/ had uncommitted changes (others edit the tree)."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "salespulse")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "salespulse_uncommitted": changed.splitlines() if changed else [],
    }


def log(msg: str) -> None:
    console.print(f"[dim]{datetime.now().strftime('%H:%M:%S')}[/dim] {msg}")


# ------------------------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """The pre-loaded records (produce order) and what a correct worker must make of them."""

    records: list[tuple[bytes, bytes]]  # (key, value)
    unique: int
    duplicates: int
    activities: int  # distinct activity events
    per_rep: dict[str, int]  # expected all-time total per rep
    mix: dict[str, int]  # distinct events by type
    reps: int
    teams: int
    span: tuple[str, str]


def _traffic(seed: int, count: int, reps: int, teams: int, start: float, prefix: str) -> list[dict[str, Any]]:
    """``count`` event dicts from the simulator's TrafficModel (its own mix), times from ``start`` on."""
    # speedup 24: one model hour covers a simulated day, so calls, emails, meetings and deals all occur.
    model = TrafficModel(
        random.Random(seed),
        start=start,
        leads_per_minute=max(1.0, 15.0 * count / 100_000),
        reps=reps,
        teams=teams,
        speedup=24.0,
        id_prefix=prefix,
    )
    out: list[dict[str, Any]] = []
    t = start
    while len(out) < count:
        t += 5.0
        out += model.due(t)
    return out[:count]


def _respread(events: list[dict[str, Any]], start: float, end: float) -> None:
    """Map the events' occurred_at linearly (order kept) onto [start, end]."""
    times = [datetime.fromisoformat(e["occurred_at"]).timestamp() for e in events]
    lo, hi = min(times), max(times)
    scale = (end - start) / max(hi - lo, 1e-9)
    for e, t in zip(events, times):
        e["occurred_at"] = datetime.fromtimestamp(start + (t - lo) * scale, UTC).isoformat(timespec="milliseconds")


def build_workload(
    n: int, seed: int, reps: int, teams: int, dup_rate: float, now: float, span_s: float = 3600.0
) -> Workload:
    """``n`` records (``dup_rate`` of them redelivered) whose ``occurred_at`` spread over the last ``span_s``."""
    n_dup = round(n * dup_rate)
    n_unique = n - n_dup
    dicts = _traffic(seed, n_unique, reps, teams, now - span_s, f"bench-{seed}-{uuid.uuid4().hex[:6]}")
    _respread(dicts, now - span_s, now - 1)
    rng = random.Random(seed + 1)
    ordered: list[tuple[float, bytes, bytes]] = []
    per_rep: Counter[str] = Counter()
    mix: Counter[str] = Counter()
    for i, d in enumerate(dicts):
        event = EventAdapter.validate_python(d)
        ordered.append((float(i), event.partition_key.encode(), event_to_json(event)))
        mix[event.type] += 1
        activity = activity_of(event)
        if activity is not None:
            per_rep[activity.rep] += 1
    # Redeliveries: the same bytes and key again, a little later in the log (same partition, new offset).
    for i in rng.sample(range(n_unique), n_dup):
        _, key, value = ordered[i]
        ordered.append((i + rng.randint(1, 2000) + 0.5, key, value))
    ordered.sort(key=lambda r: r[0])
    return Workload(
        records=[(k, v) for _, k, v in ordered],
        unique=n_unique,
        duplicates=n_dup,
        activities=sum(per_rep.values()),
        per_rep=dict(per_rep),
        mix=dict(mix.most_common()),
        reps=reps,
        teams=teams,
        span=(dicts[0]["occurred_at"], dicts[-1]["occurred_at"]),
    )


async def preload(bootstrap: str, records: list[tuple[bytes, bytes]]) -> tuple[float, list[tuple[int, int]]]:
    """Produce all records with a normal batching producer; returns (seconds, [(partition, offset)])."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(EVENTS_TOPIC, key=k, value=v) for k, v in records]
        metas = await asyncio.gather(*futures)
        return time.perf_counter() - started, [(m.partition, m.offset) for m in metas]
    finally:
        await producer.stop()


# ------------------------------------------------------------------------------------------- helpers


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all threads), in seconds; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuMeter:
    """CPU seconds of named processes between ``start()`` and ``stop()``, as % of one core."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: dict[str, float] = {}
        self.result: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        self.result = {
            name: round(100 * (cpu_seconds(pid) - self._c0[name]) / wall, 1) for name, pid in self.pids.items()
        }
        return self.result


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    if k == lo or s[lo] == s[hi]:
        return s[lo]
    if s[hi] == float("inf"):
        return float("inf")
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def health_diff(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Batches and flushes of a worker between two ``WorkerProcess.health`` scrapes."""

    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches, flushes = d("salespulse_batch_events_count"), d("salespulse_flush_seconds_count")
    flush_s = d("salespulse_flush_seconds_sum")
    slow = {
        key.split('"')[1]: int(flushes - d(key))
        for key in after
        if key.startswith("salespulse_flush_seconds_bucket") and key.split('"')[1] in ("0.25", "0.5", "1.0")
    }
    return {
        "batches": int(batches),
        "mean_batch_events": round(d("salespulse_batch_events_sum") / batches, 1) if batches else None,
        "flushes": int(flushes),
        "mean_flush_ms": round(1000 * flush_s / flushes, 1) if flushes else None,
        "flushes_slower_than_s": slow,
        "flush_share_of_wall": round(flush_s / wall_s, 3) if wall_s else None,
    }


def rate_entry(name: str, events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1)} | extra


_HEALTH_LINE = re.compile(
    r'^(salespulse_(?:flush_seconds|batch_events)_(?:sum|count)|salespulse_flush_seconds_bucket\{le="[0-9.]+"\}) '
    r"([0-9.e+]+)$",
    re.M,
)
_EVENTS_LINE = re.compile(r'^salespulse_worker_events_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$', re.M)


class WorkerProcess:
    """``python -m salespulse worker`` against the embedded broker and Redis, with /metrics polling."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        redis_url: str,
        partitions: int,
        app_id: str,
        log_path: Path,
        variants: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.app_id = app_id
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPULSE_")}
        env.update(
            SALESPULSE_KAFKA_URL=broker.url,
            SALESPULSE_REDIS_URL=redis_url,
            SALESPULSE_TANSU_COMPAT="true",
            SALESPULSE_APP_ID=app_id,
            SALESPULSE_HTTP_HOST="127.0.0.1",
            SALESPULSE_HTTP_PORT=str(self.port),
            SALESPULSE_PARTITIONS=str(partitions),
            SALESPULSE_DATA_DIR=str(log_path.parent / f"data-{app_id}"),
        )
        env.update(extra_env or {})
        # Faust creates <data_dir>/faust without parents; keep everything out of the work tree.
        Path(env["SALESPULSE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        entry = ["-m", "salespulse"]
        if variants:
            env["BENCH_VARIANTS"] = ",".join(variants)
            entry = [str(ROOT / "bench" / "worker_variants.py")]
        self.proc = spawn_tied_to_parent(
            [sys.executable, *entry, "worker", "--loglevel", "warning"],
            log_path=log_path,
            env=env,
            cwd=ROOT,
        )
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"worker {self.app_id} exited with {self.proc.returncode}; log tail:\n{log_tail(self.log_path)}"
            )

    async def scrape(self, session: aiohttp.ClientSession) -> str | None:
        try:
            async with session.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def outcomes(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        """``salespulse_worker_events_total`` by outcome, or None while /metrics does not answer."""
        text = await self.scrape(session)
        if text is None:
            return None
        return {m.group(1): float(m.group(2)) for m in _EVENTS_LINE.finditer(text)}

    async def consumed(self) -> float | None:
        """Records consumed so far (all outcomes), or None if /metrics did not answer."""
        async with aiohttp.ClientSession() as session:
            got = await self.outcomes(session)
        return sum(got.values()) if got is not None else None

    async def health(self) -> dict[str, float]:
        """Sums and counts of the worker's flush and batch histograms (diff two of these over a phase)."""
        async with aiohttp.ClientSession() as session:
            text = await self.scrape(session) or ""
        return {m.group(1): float(m.group(2)) for m in _HEALTH_LINE.finditer(text)}

    async def count_to(
        self, target: int, timeout_s: float, max_poll_s: float, cpu: CpuMeter | None = None
    ) -> dict[str, Any]:
        """Poll until the worker has consumed ``target`` records; time from the first count seen to ``target``.

        A scrape costs the worker real event-loop time (the business collector renders every rep), so
        polling is adaptive: every 0.2 s until the first count, then about twice per estimated remaining
        time, between 50 ms and ``max_poll_s``.
        """
        deadline = time.monotonic() + timeout_s
        t_first = n_first = None
        total = 0.0
        outcomes: dict[str, float] = {}
        scrape_ms: list[float] = []
        prev: tuple[float, float] | None = None
        async with aiohttp.ClientSession() as session:
            while True:
                self.check_alive()
                asked = time.perf_counter()
                got = await self.outcomes(session)
                now = time.perf_counter()
                wait = 0.2
                if got is not None:
                    scrape_ms.append(1000 * (now - asked))
                    outcomes = got
                    total = sum(got.values())
                    if total > 0 and t_first is None:
                        t_first, n_first = now, total
                        if cpu is not None:
                            cpu.start()
                    if total >= target:
                        break
                    if t_first is not None:
                        if prev is not None and total > prev[1]:
                            remaining_s = (target - total) / ((total - prev[1]) / (now - prev[0]))
                            wait = min(max_poll_s, max(0.05, remaining_s / 2))
                        prev = (now, total)
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(wait)
        cpu_pct = cpu.stop() if cpu is not None and t_first is not None else {}
        done = total >= target
        seconds = (now - t_first) if t_first is not None else 0.0
        events = int(total - (n_first or 0))
        return {
            "complete": done,
            "target": target,
            "consumed": int(total),
            "outcomes": {k: int(v) for k, v in outcomes.items()},
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
            "first_count_seen": int(n_first or 0),
            "polls": len(scrape_ms),
            "median_scrape_ms": round(percentile(scrape_ms, 50) or 0, 1),
            "cpu_percent": cpu_pct,
        }

    def stop(self) -> None:
        terminate_process(self.proc, timeout_s=20.0)


# ------------------------------------------------------------------------------------------- phases


def breakdown(workload: Workload, placements: list[tuple[int, int]], partitions: int, limit: int) -> dict[str, Any]:
    """In-process cost of the worker's own code (no Kafka, no Faust): parse, process, render."""
    by_partition: dict[int, list[tuple[int, int, bytes]]] = {p: [] for p in range(partitions)}
    for (_, value), (partition, offset) in zip(workload.records[:limit], placements[:limit]):
        by_partition[partition].append((partition, offset, value))
    for recs in by_partition.values():
        recs.sort(key=lambda r: r[1])
    # Batches of ~2000 mixing partitions (as take_events hands them over), offsets in order per partition.
    per = max(1, 2000 // partitions)
    batches: list[list[tuple[int, int, bytes]]] = []
    cursors = {p: 0 for p in by_partition}
    while any(cursors[p] < len(by_partition[p]) for p in by_partition):
        batch: list[tuple[int, int, bytes]] = []
        for p, recs in by_partition.items():
            batch += recs[cursors[p] : cursors[p] + per]
            cursors[p] += per
        batches.append(batch)
    records = [r for b in batches for r in b]
    n = len(records)

    started = time.perf_counter()
    for _, _, raw in records:
        event_from_json(raw)
    parse_s = time.perf_counter() - started

    def fresh() -> tuple[BatchProcessor, ActivityFamily]:
        table: dict[str, bytes] = {}
        activity = ActivityFamily(CellStore(table, "activity"), ZoneInfo("UTC"), retention_s=35 * 86400)
        processor = BatchProcessor(DedupIndex(table, 72 * 3600), [activity], lambda r, why: None)
        return processor, activity

    owned = set(range(partitions))
    processor, activity = fresh()
    process_s = render_s = 0.0
    partials = 0
    for batch in batches:
        t0 = time.perf_counter()
        processor.process(batch)
        t1 = time.perf_counter()
        partials += len(activity.render(owned))  # a flush per ~2000 events, as at ~8k ev/s with 250 ms flushes
        render_s += time.perf_counter() - t1
        process_s += t1 - t0
    timed_activity = activity

    # Each family's share: the same batches through the processor with activity only, activity +
    # engagement, and every family the worker runs (process and render), best of two runs each.
    def families_of(table: dict[str, bytes], names: tuple[str, ...]) -> list[Any]:
        utc, keep = ZoneInfo("UTC"), 35 * 86400
        built: dict[str, Any] = {
            "activity": ActivityFamily(CellStore(table, "activity"), utc, retention_s=keep),
            "lead_response": LeadResponseFamily(
                CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), utc, keep, sla_s=300
            ),
            "engagement": EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), utc, keep),
            "pipeline": PipelineFamily(
                CellStore(table, "pipeline"), RecordLog(table, "pstate", PIPELINE_CODEC), utc, keep, pipelines=Config().pipeline_specs()
            ),
        }
        return [built[name] for name in names]

    per_family: dict[str, float] = {}
    for label, names in (
        ("activity", ("activity",)),
        ("activity+engagement", ("activity", "engagement")),
        ("pipeline", ("pipeline",)),
        ("all_families", ("activity", "lead_response", "pipeline", "engagement")),
    ):
        best = float("inf")
        for _ in range(2):
            table: dict[str, bytes] = {}
            fams = families_of(table, names)
            proc = BatchProcessor(DedupIndex(table, 72 * 3600), fams, lambda r, why: None)
            t0 = time.perf_counter()
            for batch in batches:
                proc.process(batch)
                for fam in fams:
                    fam.render(owned)
            best = min(best, time.perf_counter() - t0)
        per_family[label] = round(n / best, 1)

    # The same again under cProfile, for the top of the in-process profile.
    processor, activity = fresh()
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        processor.process(batch)
        activity.render(owned)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    top = [line for line in out.getvalue().splitlines() if line.strip()][-19:]
    return {
        "_activity": timed_activity,
        "events": n,
        "parse_events_per_s": round(n / parse_s, 1),
        "process_events_per_s": round(n / process_s, 1),
        "render_seconds": round(render_s, 3),
        "partials_rendered": partials,
        "process_and_render_events_per_s": round(n / (process_s + render_s), 1),
        "parse_share_of_process": round(parse_s / process_s, 3),
        "process_and_render_events_per_s_by_families": per_family,
        "cprofile_top_tottime": top,
    }


async def flush_costs(activity: ActivityFamily, partitions: int, redis_url: str, bootstrap: str) -> dict[str, Any]:
    """One flush with every aggregate dirty (as at >= 2k events/s over 200 reps): render, Redis, metric topic.

    Redis writes go to db 1 (the worker uses db 0); metric records go to the real metric topic, unread here.
    """
    owned = set(range(partitions))
    for partition in owned:
        activity.mark_partition_dirty(partition)
    started = time.perf_counter()
    partials = activity.render(owned)
    render_s = time.perf_counter() - started
    client = redis_client_for(redis_url.rsplit("/", 1)[0] + "/1")
    redis_pub = RedisPublisher(client)
    topics = TopicPublisher(KafkaConnection.plaintext(bootstrap))
    await topics.start()
    try:
        await redis_pub.publish(partials[:10])  # load the script, open the connection
        await topics.publish(partials[:10])
        started = time.perf_counter()
        await redis_pub.publish(partials)
        redis_s = time.perf_counter() - started
        started = time.perf_counter()
        await topics.publish(partials)
        kafka_s = time.perf_counter() - started
        await client.flushdb()
    finally:
        await topics.stop()
        await client.aclose()
    return {
        "partials": len(partials),
        "render_ms": round(1000 * render_s, 1),
        "redis_publish_ms": round(1000 * redis_s, 1),
        "topic_publish_ms": round(1000 * kafka_s, 1),
        "total_ms": round(1000 * (render_s + redis_s + kafka_s), 1),
    }


async def baseline_raw(bootstrap: str, n: int, partitions: int, cpu: CpuMeter) -> dict[str, Any]:
    """Baseline A: the consumption ceiling of one plain aiokafka consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(EVENTS_TOPIC, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        counts: dict[str, int] = {}
        total = 0
        cpu.start()
        started = time.perf_counter()
        deadline = time.monotonic() + 120
        while total < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                for msg in msgs:
                    kind = orjson.loads(msg.value)["type"]
                    counts[kind] = counts.get(kind, 0) + 1
                total += len(msgs)
        seconds = time.perf_counter() - started
        cpu_pct = cpu.stop()
    finally:
        await consumer.stop()
    return rate_entry("A: raw aiokafka getmany + orjson", total, seconds, complete=total >= n, cpu_percent=cpu_pct)


async def raw_processor(bootstrap: str, n: int, partitions: int, cpu: CpuMeter) -> dict[str, Any]:
    """Reference C: baseline A's consumer feeding salespulse's BatchProcessor (dict tables, nothing published).

    Not a baseline of the brief: it shows what the worker's own processing costs without Faust's
    per-message stream path, changelog and publishers (a what-if for the hot path).
    """
    table: dict[str, bytes] = {}
    activity = ActivityFamily(CellStore(table, "activity"), ZoneInfo("UTC"), retention_s=35 * 86400)
    processor = BatchProcessor(DedupIndex(table, 72 * 3600), [activity], lambda r, why: None)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(EVENTS_TOPIC, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total = 0
        cpu.start()
        started = time.perf_counter()
        deadline = time.monotonic() + 120
        while total < n and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=2000)
            records = [(m.partition, m.offset, m.value) for msgs in fetched.values() for m in msgs]
            if records:
                processor.process(records)
                total += len(records)
        seconds = time.perf_counter() - started
        cpu_pct = cpu.stop()
    finally:
        await consumer.stop()
    return rate_entry(
        "C: raw aiokafka + BatchProcessor (no Faust, no publishing)",
        total,
        seconds,
        complete=total >= n,
        counted=processor.totals.processed,
        duplicates=processor.totals.duplicates,
        cpu_percent=cpu_pct,
    )


async def baseline_faust(kafka_url: str, n: int, partitions: int, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Baseline B: a bare Faust agent in its own process, timed from its first batch to N."""
    app_id = f"bench-bare-{uuid.uuid4().hex[:8]}"
    out = run_dir / "bare_faust.json"
    log_path = run_dir / "bare_faust.log"
    proc = spawn_tied_to_parent(
        [
            sys.executable, str(ROOT / "bench" / "bare_faust.py"),
            "--kafka-url", kafka_url, "--app-id", app_id, "--events", str(n),
            "--partitions", str(partitions), "--out", str(out), "--data-dir", str(run_dir / f"data-{app_id}"),
        ],
        log_path=log_path,
        cwd=ROOT,
    )  # fmt: skip
    cpu = CpuMeter({"faust": proc.pid})
    cpu.start()
    launched = time.time()
    try:
        deadline = time.monotonic() + timeout_s
        while not out.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"bare Faust exited with {proc.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare Faust did not reach {n} in {timeout_s}s:\n{log_tail(log_path)}")
            await asyncio.sleep(0.1)
        cpu_pct = cpu.stop()  # whole life, join included: a lower bound of its load while consuming
        state = json.loads(out.read_text())
    finally:
        terminate_process(proc, timeout_s=15.0)
    seconds = state["t_last"] - state["t_first"]
    events = state["count"] - state["n_first"]
    return rate_entry(
        "B: bare Faust take_events(2000), raw",
        events,
        seconds,
        app_id=app_id,
        batches=state["batches"],
        first_event_after_launch_s=round(state["t_first"] - launched, 2),
        cpu_percent_lifetime=cpu_pct,
    )


async def redis_rep_totals(client: aioredis.Redis) -> dict[str, int]:
    """``total`` of every ``salespulse:activity:rep:<rep>:all`` hash."""
    keys = [k async for k in client.scan_iter(match=REP_ALL_PATTERN, count=1000)]
    if not keys:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "total")
        values = await pipe.execute()
    return {
        key.decode().split(":")[3]: int(float(v or 0)) for key, v in zip(keys, values)
    }


async def verify_redis(client: aioredis.Redis, workload: Workload, timeout_s: float = 15.0) -> dict[str, Any]:
    """Wait (publishers flush every 250 ms) until Redis holds the expected per-rep totals, or time out."""
    started = time.perf_counter()
    while True:
        totals = await redis_rep_totals(client)
        if sum(totals.values()) == workload.activities and totals == workload.per_rep:
            break
        if time.perf_counter() - started > timeout_s:
            break
        await asyncio.sleep(0.1)
    mismatched = sorted(r for r in set(totals) | set(workload.per_rep) if totals.get(r) != workload.per_rep.get(r))
    return {
        "expected_activities": workload.activities,
        "redis_sum_of_rep_all_totals": sum(totals.values()),
        "reps_in_redis": len(totals),
        "reps_expected": len(workload.per_rep),
        "mismatched_reps": mismatched[:20],
        "ok": not mismatched and sum(totals.values()) == workload.activities,
        "settled_after_s": round(time.perf_counter() - started, 2),
    }


@dataclass
class Probe:
    sent: float
    acked: float | None = None
    #: when the probe's activity key was announced (the issue #2 measure)
    seen: float | None = None
    #: when each family's key of the probe was announced (``activity``, ``engagement``)
    seen_by: dict[str, float] = field(default_factory=dict)


@dataclass
class LiveResult:
    probes: dict[int, Probe] = field(default_factory=dict)
    sent_live: int = 0
    duration_s: float = 0.0
    messages: int = 0
    max_send_lag_ms: float = 0.0
    lag_events: list[float] = field(default_factory=list)  # produced - consumed, sampled every --lag-sample-s
    scrape_ms: list[float] = field(default_factory=list)  # how long each of those /metrics scrapes took


async def live_phase(
    bootstrap: str,
    redis_url: str,
    seed: int,
    reps: int,
    teams: int,
    rate: float,
    duration_s: float,
    probe_interval_s: float,
    tag: str,
    consumed: Any,
    lag_sample_s: float = 2.0,
    families: tuple[str, ...] = ("activity", "engagement"),
) -> LiveResult:
    """Produce ``rate`` events/s for ``duration_s`` plus probes; time each probe's keys on ``salespulse:updates``.

    ``families``: the probe's families the worker runs (it waits for the probe's key of each)."""
    total_live = int(rate * duration_s) + 10
    dicts = _traffic(seed + 7, total_live, reps, teams, time.time(), f"live-{tag}")
    result = LiveResult()
    # A probe (a call) lands in the activity and engagement families: time its rep's all-time key in each.
    key_pattern = re.compile(r"salespulse:(activity|engagement):rep:probe-(\d+):all")

    stop_listening = asyncio.Event()
    listener_stop = threading.Event()
    subscribed = threading.Event()

    def listen() -> None:
        # A thread of its own, so that a probe's arrival is timed when Redis sends it, not when the
        # benchmark's event loop (busy producing 2,000 events/s) gets round to reading it.
        client = redis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(UPDATES_CHANNEL)
        subscribed.set()
        try:
            while not listener_stop.is_set():
                msg = pubsub.get_message(timeout=0.5)
                if msg is None:
                    continue
                now = time.time()
                result.messages += 1
                data = msg["data"]
                if b"probe-" not in data:
                    continue
                for update in orjson.loads(data).get("updates", []):
                    matched = key_pattern.fullmatch(update.get("key", ""))
                    if matched is None:
                        continue
                    probe = result.probes.get(int(matched[2]))
                    if probe is None:
                        continue
                    probe.seen_by.setdefault(matched[1], now)
                    if matched[1] == "activity" and probe.seen is None:
                        probe.seen = now
        finally:
            pubsub.close()
            client.close()

    lag_samples: list[tuple[float, int, float]] = []  # (time, produced, consumed since the start)
    base = await consumed()

    async def watch_lag() -> None:
        while not stop_listening.is_set():
            await asyncio.sleep(lag_sample_s)  # a scrape costs the worker tens of ms of event loop
            started = time.perf_counter()
            got = await consumed()
            result.scrape_ms.append(1000 * (time.perf_counter() - started))
            if got is not None and base is not None:
                lag_samples.append((time.time(), result.sent_live + len(result.probes), got - base))

    listener = threading.Thread(target=listen, name="probe-listener", daemon=True)
    listener.start()
    await asyncio.to_thread(subscribed.wait, 10)
    watcher = asyncio.create_task(watch_lag())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        start = time.time() + 0.2
        # Serialise ahead with occurred_at = planned send time (the ingest path's canonical JSON).
        values: list[tuple[bytes, bytes]] = []
        for i, d in enumerate(dicts):
            d["occurred_at"] = datetime.fromtimestamp(start + i / rate, UTC).isoformat(timespec="milliseconds")
            event = EventAdapter.validate_python(d)
            values.append((event.partition_key.encode(), event_to_json(event)))
        start = max(start, time.time())
        pending = []
        probes_sent = 0

        def acked(i: int) -> Any:
            def done(_: Any) -> None:
                result.probes[i].acked = time.time()

            return done

        while True:
            now = time.time()
            elapsed = now - start
            if elapsed >= duration_s:
                break
            due = min(int(elapsed * rate), len(values))
            if due - result.sent_live > rate * 0.05:
                result.max_send_lag_ms = max(result.max_send_lag_ms, 1000 * (due - result.sent_live) / rate)
            while result.sent_live < due:
                key, value = values[result.sent_live]
                pending.append(await producer.send(EVENTS_TOPIC, key=key, value=value))
                result.sent_live += 1
            while probes_sent <= elapsed / probe_interval_s:
                i = probes_sent
                occurred = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
                value = orjson.dumps(
                    {
                        "event_id": f"probe-{tag}-{i}",
                        "type": "call.logged",
                        "occurred_at": occurred,
                        "lead_id": f"probe-lead-{tag}-{i}",
                        "rep_id": f"probe-{i}",
                        "team": "team-probe",
                        "outcome": "connected",
                        "duration_s": 30.0,
                    }
                )
                result.probes[i] = Probe(sent=time.time())
                fut = await producer.send(EVENTS_TOPIC, key=f"probe-lead-{tag}-{i}".encode(), value=value)
                fut.add_done_callback(acked(i))
                pending.append(fut)
                probes_sent += 1
            await asyncio.sleep(0.005)
        result.duration_s = time.time() - start
        await producer.flush()
        await asyncio.gather(*pending, return_exceptions=True)
        deadline = time.time() + 10
        while time.time() < deadline and any(len(p.seen_by) < len(families) for p in result.probes.values()):
            await asyncio.sleep(0.05)
    finally:
        stop_listening.set()
        listener_stop.set()
        await producer.stop()
        await asyncio.to_thread(listener.join, 5)
        await watcher
        result.lag_events = [max(0.0, produced - done) for _, produced, done in lag_samples]
    return result


def latency_percentiles(values: list[float], missing: int) -> dict[str, float | None]:
    """p50/p90/p99/max in ms; ``missing`` samples count as infinitely late (reported as None)."""
    ranked = values + [float("inf")] * missing
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        v = percentile(ranked, q)
        out[name] = round(v, 1) if v is not None and v != float("inf") else None
    return out


async def merge_script_stats(client: aioredis.Redis) -> tuple[int, int]:
    """Calls and microseconds Redis spent in EVAL/EVALSHA so far (``INFO commandstats``)."""
    stats = await client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        entry = stats.get(name) or {}
        calls += int(entry.get("calls", 0))
        usec += int(entry.get("usec", 0))
    return calls, usec


def probe_series(live: LiveResult) -> list[list[float | None]]:
    if not live.probes:
        return []
    t0 = min(p.sent for p in live.probes.values())
    return [
        [round(p.sent - t0, 3), round(1000 * (p.seen - p.sent), 1) if p.seen is not None else None]
        for _, p in sorted(live.probes.items())
    ]


# ------------------------------------------------------------------------------------------- py-spy


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: (label, substring of a frame) for the inclusive breakdown of the worker profile.
PROFILE_GROUPS: list[tuple[str, str]] = [
    ("salespulse batch agent: stage (parse, dedup, families)", "stage (salespulse/engine/processor.py"),
    ("salespulse batch agent: persist (before each commit)", "persist (salespulse/engine/processor.py"),
    ("  event_from_json (pydantic)", "event_from_json (salespulse/models/events.py"),
    ("  activity family (apply)", "apply (salespulse/families/activity/family.py"),
    ("  windowed cells (WindowedFamily)", "salespulse/families/windowed.py"),
    ("  lead response family", "salespulse/families/lead_response/"),
    ("  CellStore.write_touched (JSON + table set)", "write_touched (salespulse/engine/cells.py"),
    ("  DedupIndex.write_pending", "write_pending (salespulse/engine/dedup.py"),
    ("salespulse Flusher.flush", "flush (salespulse/engine/flusher.py"),
    ("  render (families)", "render (salespulse/families/"),
    ("  RedisPublisher.publish", "publish (salespulse/outputs/redis.py"),
    ("  TopicPublisher.publish", "publish (salespulse/outputs/topics.py"),
    ("lead-response alert clock / sinks", "salespulse/outputs/alerts.py"),
    ("/metrics scrape (prometheus_client)", "generate_latest (prometheus_client/"),
    ("salespulse batch consumer (fetch → agent, acks)", "salespulse/engine/faust/batch_consumer.py"),
    ("faust consumer: fetch + drain", "faust/transport/consumer.py"),
    ("faust conductor: per-message on_message", "faust/transport/conductor"),
    ("faust stream iteration / take_events", "faust/streams.py"),
    ("faust producer + tables (changelog)", "faust/transport/producer.py"),
    ("aiokafka (anywhere in the stack)", "aiokafka/"),
    ("epoll wait (counted as active by py-spy)", "select (selectors.py"),
]


def start_spy(args: argparse.Namespace, pid: int, out: Path, run_dir: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record on ``pid`` (raw collapsed stacks to ``out``) when ``--profile`` is on."""
    if not args.profile:
        return None
    with open(run_dir / f"{out.stem}.py-spy.log", "wb") as spy_log:
        return subprocess.Popen(
            [args.py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
             "--output", str(out)],
            stdout=spy_log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_spy(spy: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Stop py-spy (it writes its file on SIGINT) and summarise the profile."""
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not out.exists():
        return {"error": f"py-spy wrote no {out}"}
    return summarize_profile(out) | {"raw": str(out)}


_PACKAGES = ("salespulse", "faust", "aiokafka", "mode", "asyncio", "pydantic", "redis", "orjson", "prometheus_client")


def _package_of(frame: str) -> str:
    """Which package a py-spy frame's code belongs to (by its file path), for self-time shares."""
    m = _FRAME.match(frame)
    path = m.group("file") if m else frame
    for name in _PACKAGES:
        if path.startswith(f"{name}/") or f"/{name}/" in path or path.startswith(f"{name}.py"):
            return name
    if path.endswith("selectors.py"):
        return "epoll wait"
    return "other (stdlib, C extensions)"


def summarize_profile(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's raw (collapsed) output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    group_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        names = []
        for frame in frames:
            m = _FRAME.match(frame)
            if m:
                path = m.group("file")
                short = "/".join(path.split("/")[-3:]) if "site-packages" in path or "/lib/" in path else path
                names.append(f"{m.group('func')} ({short})")
            else:
                names.append(frame)
        self_counts[names[-1]] += count
        package_counts[_package_of(frames[-1])] += count
        for name in set(names):
            incl_counts[name] += count
        joined = ";".join(frames)
        for label, needle in PROFILE_GROUPS:
            if needle in joined:
                group_counts[label] += count

    def share(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "groups_inclusive_percent": {label: share(group_counts[label]) for label, _ in PROFILE_GROUPS},
        "self_percent_by_package": {name: share(c) for name, c in package_counts.most_common()},
        "top_self_percent": [(name, share(c)) for name, c in self_counts.most_common(top)],
        "top_inclusive_percent": [(name, share(c)) for name, c in incl_counts.most_common(top)],
        "top_salespulse_inclusive_percent": [
            (name, share(c)) for name, c in incl_counts.most_common() if "(salespulse/" in name
        ][:top],
    }


# ------------------------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a and b else "-"


def print_report(results: dict[str, Any]) -> None:
    rates = results["throughput"]
    a = rates.get("baseline_a", {}).get("events_per_s")
    b = rates.get("baseline_b", {}).get("events_per_s")
    table = Table(title=f"Throughput, N={results['config']['events']:,} records, {results['config']['partitions']} partitions")
    for col in ("run", "events", "seconds", "events/s", "÷ A", "÷ B", "note"):
        table.add_column(col, justify="left" if col in ("run", "note") else "right")
    for key in ("baseline_a", "baseline_b", "reference_c", "worker", "worker_catchup"):
        entry = rates.get(key)
        if not entry:
            continue
        eps = entry.get("events_per_s")
        note = ""
        if key.startswith("worker"):
            note = "target ≥ 10,000/s: " + ("[green]met[/green]" if eps and eps >= TARGET_EVENTS_PER_S else "[red]missed[/red]")
            if not entry.get("complete", True):
                note += " [red](incomplete)[/red]"
        table.add_row(
            entry.get("name", key), f"{entry.get('events', 0):,}", f"{entry.get('seconds', 0):.2f}",
            f"{eps:,.0f}" if eps else "-", ratio(eps, a), ratio(eps, b), note,
        )  # fmt: skip
    console.print(table)

    bd = results.get("breakdown")
    if bd:
        t = Table(title=f"In-process breakdown (no Kafka/Faust), {bd['events']:,} records")
        t.add_column("step")
        t.add_column("events/s", justify="right")
        t.add_row("event_from_json (pydantic) alone", f"{bd['parse_events_per_s']:,.0f}")
        t.add_row("BatchProcessor.process (dict tables)", f"{bd['process_events_per_s']:,.0f}")
        t.add_row("process + render every batch", f"{bd['process_and_render_events_per_s']:,.0f}")
        for label, rate in bd.get("process_and_render_events_per_s_by_families", {}).items():
            t.add_row(f"  process + render, families: {label}", f"{rate:,.0f}")
        console.print(t)

    lat = results.get("latency")
    if lat:
        t = Table(title=f"Produce → Redis latency at {lat['rate']:,.0f} events/s ({lat['probes_sent']} probes)")
        for col in ("measure", "p50 ms", "p90 ms", "p99 ms", "max ms", "note"):
            t.add_column(col, justify="left" if col in ("measure", "note") else "right")
        rows = [("produce → Redis pub/sub (activity key)", "redis_ms")]
        if lat.get("redis_ms_all_families") and len(lat.get("probe_families", [])) > 1:
            rows.append((f"produce → Redis pub/sub ({' and '.join(lat['probe_families'])} keys)", "redis_ms_all_families"))
        rows.append(("produce → broker ack", "ack_ms"))
        for name, key in rows:
            p = lat[key]

            def f(v: float | None) -> str:
                if v is None:
                    return "> 10 s after end" if key != "ack_ms" and lat["probes_missing"] else "-"
                return f"{v:.0f}"

            note = ""
            if key != "ack_ms":
                ok = p["p99"] is not None and p["p99"] <= TARGET_P99_MS
                note = "target p99 ≤ 500 ms: " + ("[green]met[/green]" if ok else "[red]missed[/red]")
            t.add_row(name, f(p["p50"]), f(p["p90"]), f(p["p99"]), f(p["max"]), note)
        console.print(t)
        health = lat.get("worker_health", {})
        console.print(
            f"probes missing: {lat['probes_missing']}; live events sent {lat['live_events_sent']:,} in "
            f"{lat['duration_s']:.1f}s; consumer lag mean {lat['consumer_lag_s']['mean']} s, max "
            f"{lat['consumer_lag_s']['max']} s; {health.get('flushes')} flushes of {health.get('mean_flush_ms')} ms "
            f"on average; Redis busy in scripts {lat.get('redis_script_ms')} ms in all; a /metrics scrape every "
            f"{lat.get('lag_sample_s')} s took {lat.get('scrape_ms_median')} ms (median); CPU % {lat.get('cpu_percent', {})}"
        )
    corr = results.get("correctness")
    if corr:
        style = "green" if corr["ok"] else "red"
        console.print(
            f"[{style}]correctness: Redis Σ rep totals {corr['redis_sum_of_rep_all_totals']:,} vs "
            f"{corr['expected_activities']:,} distinct activities; {len(corr['mismatched_reps'])} reps differ[/{style}]"
        )


# ------------------------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="salespulse-bench-"))
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(),
        },
        "config": {
            "events": args.events,
            "partitions": args.partitions,
            "reps": args.reps,
            "teams": args.teams,
            "dup_rate": args.dup_rate,
            "seed": args.seed,
            "rate": args.rate,
            "live_seconds": args.live_seconds,
            "probe_interval_ms": args.probe_interval_ms,
            "profiled": bool(args.profile),
            "worker_variants": args.variant,
            "worker_env": args.worker_env,
        },
        "code": code_version(),
        "run_dir": str(run_dir),
        "throughput": {},
    }
    log(f"logs and scratch files in {run_dir}")
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    run_families = Settings(families=worker_env.get("SALESPULSE_FAMILIES", ",".join(METRIC_FAMILIES))).family_names
    probe_families = tuple(f for f in ("activity", "engagement") if f in run_families)
    if "activity" not in probe_families:
        raise SystemExit("the benchmark counts activities: SALESPULSE_FAMILIES must include activity")
    results["config"]["worker_families"] = list(run_families)
    log(f"worker families: {', '.join(run_families)}")
    if args.variant or worker_env:
        log(f"[yellow]experimental worker: variants {args.variant}, env {worker_env}[/yellow]")
    n = args.events
    now = time.time()
    t0 = time.perf_counter()
    workload = build_workload(n, args.seed, args.reps, args.teams, args.dup_rate, now)
    results["workload"] = {
        "records": len(workload.records),
        "unique_events": workload.unique,
        "redelivered_duplicates": workload.duplicates,
        "distinct_activities": workload.activities,
        "activity_share": round(workload.activities / workload.unique, 3),
        "reps_with_activity": len(workload.per_rep),
        "mix": workload.mix,
        "occurred_at_span": workload.span,
        "mean_value_bytes": round(sum(len(v) for _, v in workload.records) / len(workload.records), 1),
        "generation_s": round(time.perf_counter() - t0, 2),
    }
    log(
        f"workload: {len(workload.records):,} records ({workload.duplicates:,} redelivered), "
        f"{workload.activities:,} distinct activities ({results['workload']['activity_share']:.0%}), "
        f"{len(workload.per_rep)} reps"
    )

    with EmbeddedBroker(log_path=run_dir / "tansu.log") as broker, EmbeddedRedis(log_path=run_dir / "redis.log") as rs:
        await ensure_topics(KafkaConnection.plaintext(broker.bootstrap), args.partitions)
        seconds, placements = await preload(broker.bootstrap, workload.records)
        per_partition = Counter(p for p, _ in placements)
        results["preload"] = {
            "seconds": round(seconds, 2),
            "events_per_s": round(n / seconds, 1),
            "per_partition": dict(sorted(per_partition.items())),
        }
        log(f"pre-loaded {n:,} records in {seconds:.1f}s; per partition {dict(sorted(per_partition.items()))}")

        if not args.skip_breakdown:
            results["breakdown"] = breakdown(workload, placements, args.partitions, args.breakdown_events)
            bd = results["breakdown"]
            bd["full_flush"] = await flush_costs(bd.pop("_activity"), args.partitions, rs.url, broker.bootstrap)
            log(f"one full flush: {bd['full_flush']}")
            log(
                f"in-process: parse {bd['parse_events_per_s']:,.0f}/s, process {bd['process_events_per_s']:,.0f}/s, "
                f"process+render {bd['process_and_render_events_per_s']:,.0f}/s"
            )

        infra = {"broker": broker.pid, "redis": rs.pid}
        if not args.skip_baselines:
            cpu = CpuMeter({"bench": os.getpid(), **infra})
            results["throughput"]["baseline_a"] = await baseline_raw(broker.bootstrap, n, args.partitions, cpu)
            log(f"baseline A: {results['throughput']['baseline_a']['events_per_s']:,.0f} events/s")
            cpu = CpuMeter({"bench": os.getpid(), **infra})
            results["throughput"]["reference_c"] = await raw_processor(broker.bootstrap, n, args.partitions, cpu)
            log(f"reference C: {results['throughput']['reference_c']['events_per_s']:,.0f} events/s")
            results["throughput"]["baseline_b"] = await baseline_faust(
                broker.url, n, args.partitions, run_dir, args.timeout
            )
            log(f"baseline B: {results['throughput']['baseline_b']['events_per_s']:,.0f} events/s")

        redis_client = aioredis.Redis.from_url(rs.url)
        try:
            # --- the salespulse worker, all publishers on
            app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
            worker = WorkerProcess(
                broker, rs.url, args.partitions, app_id, run_dir / "worker.log", args.variant, worker_env
            )
            profile_path = run_dir / "worker-profile.txt"
            spy = start_spy(args, worker.pid, profile_path, run_dir)
            try:
                launched = time.perf_counter()
                cpu = CpuMeter({"worker": worker.pid, **infra})
                entry = await worker.count_to(n, args.timeout, args.poll_ms / 1000, cpu)
                entry["worker_health"] = health_diff({}, await worker.health(), entry["seconds"])
                entry["name"] = "salespulse worker (all publishers)"
                entry["app_id"] = app_id
                entry["ready_to_first_count_s"] = round(time.perf_counter() - launched - entry["seconds"], 2)
                results["throughput"]["worker"] = entry
                log(
                    f"worker: {entry['events_per_s'] or 0:,.0f} events/s over {entry['events']:,} records "
                    f"({entry['outcomes']}); CPU % {entry['cpu_percent']}"
                )
                if spy is not None:
                    results["profile"] = stop_spy(spy, profile_path)
                results["correctness"] = await verify_redis(redis_client, workload)
                log(f"correctness: {results['correctness']}")
            finally:
                if spy is not None and spy.poll() is None:
                    spy.kill()
                worker.stop()

            # --- latency: a fresh worker catches up with the backlog, then live traffic with probes
            if not args.skip_latency:
                app_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
                worker = WorkerProcess(
                    broker, rs.url, args.partitions, app_id, run_dir / "worker-latency.log", args.variant, worker_env
                )
                try:
                    catchup = await worker.count_to(
                        n, args.timeout, args.poll_ms / 1000, CpuMeter({"worker": worker.pid, **infra})
                    )
                    catchup["name"] = "salespulse worker (2nd run: catch-up)"
                    catchup["app_id"] = app_id
                    results["throughput"]["worker_catchup"] = catchup
                    log(f"catch-up worker: {catchup['events_per_s'] or 0:,.0f} events/s; now live traffic")
                    await asyncio.sleep(1.0)
                    cpu = CpuMeter({"worker": worker.pid, "bench": os.getpid(), **infra})
                    health_before = await worker.health()
                    scripts_before = await merge_script_stats(redis_client)
                    spy = start_spy(args, worker.pid, run_dir / "worker-live-profile.txt", run_dir)
                    cpu.start()
                    live = await live_phase(
                        broker.bootstrap, rs.url, args.seed, args.reps, args.teams, args.rate,
                        args.live_seconds, args.probe_interval_ms / 1000, uuid.uuid4().hex[:6], worker.consumed,
                        args.lag_sample_s, probe_families,
                    )  # fmt: skip
                    cpu_pct = cpu.stop()
                    live_health = health_diff(health_before, await worker.health(), live.duration_s)
                    scripts_after = await merge_script_stats(redis_client)
                    if spy is not None:
                        results["profile_live"] = stop_spy(spy, run_dir / "worker-live-profile.txt")
                    lat_redis = [1000 * (p.seen - p.sent) for p in live.probes.values() if p.seen is not None]
                    lat_all = [
                        1000 * (max(p.seen_by.values()) - p.sent)
                        for p in live.probes.values()
                        if len(p.seen_by) == len(probe_families)
                    ]
                    lat_ack = [1000 * (p.acked - p.sent) for p in live.probes.values() if p.acked is not None]
                    expected_total = n + live.sent_live + len(live.probes)
                    after = await worker.count_to(expected_total, 15, 0.1)
                    results["latency"] = {
                        "rate": args.rate,
                        "achieved_rate": round(live.sent_live / live.duration_s, 1),
                        "duration_s": round(live.duration_s, 2),
                        "live_events_sent": live.sent_live,
                        "probes_sent": len(live.probes),
                        "probes_seen": len(lat_redis),
                        "probes_missing": len(live.probes) - len(lat_redis),
                        "pubsub_messages": live.messages,
                        "max_send_lag_ms": round(live.max_send_lag_ms, 1),
                        # produced minus consumed by the worker, sampled every 2 s, in seconds of traffic
                        "consumer_lag_s": {
                            "mean": round(sum(live.lag_events) / len(live.lag_events) / args.rate, 2)
                            if live.lag_events else None,
                            "max": round(max(live.lag_events) / args.rate, 2) if live.lag_events else None,
                        },
                        # Over all probes; a probe that never arrived counts as infinitely late, so a
                        # percentile that lands on one is null (it is above the 10 s wait after the run).
                        "redis_ms": latency_percentiles(lat_redis, len(live.probes) - len(lat_redis)),
                        # Over the probes that arrived only (optimistic when some are missing).
                        "redis_ms_arrived": latency_percentiles(lat_redis, 0),
                        # Until the probe's key of every family it lands in (activity, engagement) was announced.
                        "probe_families": list(probe_families),
                        "redis_ms_all_families": latency_percentiles(lat_all, len(live.probes) - len(lat_all)),
                        "ack_ms": {
                            q: (round(v, 1) if v is not None else None)
                            for q, v in (
                                ("p50", percentile(lat_ack, 50)),
                                ("p90", percentile(lat_ack, 90)),
                                ("p99", percentile(lat_ack, 99)),
                                ("max", max(lat_ack) if lat_ack else None),
                            )
                        },
                        "cpu_percent": cpu_pct,
                        "worker_health": live_health,
                        # the lag samples are /metrics scrapes, each a pause of the worker's event loop
                        "lag_sample_s": args.lag_sample_s,
                        "scrape_ms_median": round(percentile(live.scrape_ms, 50), 1) if live.scrape_ms else None,
                        # Redis's own time running scripts (the merge, the alert guard) in the live phase,
                        # from INFO commandstats: what of a flush's wait is Redis working
                        "redis_script_ms": round((scripts_after[1] - scripts_before[1]) / 1000, 1),
                        "redis_script_calls": scripts_after[0] - scripts_before[0],
                        # [seconds after the first probe, produce->Redis ms or null], one per probe
                        "probe_series": probe_series(live),
                        "worker_consumed_all": after["complete"],
                        "worker_consumed": after["consumed"],
                    }
                    log(f"latency: {results['latency']['redis_ms']} (missing {results['latency']['probes_missing']})")
                finally:
                    worker.stop()
        finally:
            await redis_client.aclose()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark the salespulse worker: throughput against raw-aiokafka and bare-Faust "
        "baselines, Redis correctness, and produce-to-Redis latency under live load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000, help="records to pre-load (duplicates included)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of salespulse.events")
    parser.add_argument("--reps", type=int, default=200, help="reps in the generated traffic")
    parser.add_argument("--teams", type=int, default=10, help="teams the reps are spread over")
    parser.add_argument("--dup-rate", type=float, default=0.01, help="share of redelivered duplicates")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic model")
    parser.add_argument("--rate", type=float, default=2000.0, help="live events/s in the latency phase")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="length of the latency phase (s)")
    parser.add_argument("--probe-interval-ms", type=float, default=50.0, help="one probe event every this many ms")
    parser.add_argument("--poll-ms", type=float, default=1000.0, help="longest /metrics polling period (adaptive)")
    parser.add_argument(
        "--lag-sample-s", type=float, default=2.0, help="live phase: consumer lag sampled (a /metrics scrape) this often"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a consumption phase after (s)")
    parser.add_argument("--breakdown-events", type=int, default=30_000, help="records for the in-process breakdown")
    parser.add_argument("--skip-baselines", action="store_true", help="skip baselines A and B and reference C")
    parser.add_argument("--skip-breakdown", action="store_true", help="skip the in-process breakdown")
    parser.add_argument("--skip-latency", action="store_true", help="skip the second worker and the latency phase")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the throughput worker and the live-phase worker (costs them a little; noted in the JSON)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="run the workers with an experimental patch from bench/worker_variants.py (repeatable)",
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE", help="extra worker environment (repeatable)"
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="py-spy executable")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "latest.json", help="where to write the JSON"
    )
    args = parser.parse_args()
    if args.profile and not shutil.which(args.py_spy):
        parser.error(f"--profile needs py-spy ({args.py_spy!r} not found; pip install py-spy, or pass --py-spy)")

    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    for key, title in (("profile", "throughput phase"), ("profile_live", "live phase")):
        prof = results.get(key)
        if not prof or "samples" not in prof:
            continue
        t = Table(title=f"Worker profile, {title} (py-spy, {prof['samples']:,} samples): inclusive % of samples")
        t.add_column("part")
        t.add_column("%", justify="right")
        for label, pct in prof["groups_inclusive_percent"].items():
            t.add_row(label, f"{pct:.1f}")
        console.print(t)
    log(f"wrote {args.output} (run took {results['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
