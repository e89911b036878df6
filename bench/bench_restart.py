"""Restart of a durable ``salespulse run``: a month of a 20-rep team in, stop, start, time to ready.

For each workload (a month of the simulator's ``TrafficModel`` for 20 reps in 2 teams, at a typical and a
busy lead rate): start ``salespulse run`` on an empty data directory, post the month through ingest
(journaled, fsync'd before each 202), wait until the worker has counted it, read the business numbers of
/metrics and the Redis hashes, stop it (SIGTERM, then in a second round SIGKILL), start it again and time
until /readyz is 200 (broker re-seeded, state rebuilt by reprocessing, outputs released), then compare the
numbers. Baselines of the same run: the start of an empty ``--ephemeral`` run and of an empty durable one;
and the cost of the journal on ingest: sequential one-event POSTs, durable vs ``--ephemeral``.

    .venv/bin/python bench/bench_restart.py                 # about 3 minutes on 2 cores
    .venv/bin/python bench/bench_restart.py --rates 0.05    # the typical month only
    .venv/bin/python bench/bench_restart.py --rates 0.05 --days 1 --journal-days 365   # a typical year's journal
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salespulse.embedded.journal import JournalWriter  # noqa: E402
from salespulse.embedded.ports import free_port  # noqa: E402
from salespulse.models.events import EventAdapter, event_to_json  # noqa: E402
from salespulse.simulate import TrafficModel  # noqa: E402
from salespulse.topics import EVENTS_TOPIC  # noqa: E402

#: /metrics series that are not business numbers: health, timings and ages (they move with the clock).
_NOT_NUMBERS = re.compile(
    r"^salespulse_(worker_|publish_errors|flush_|alerts_published|batch_|consumer_lag|events_published|webhook|"
    r"http_|requests|ingest|rejected|ignored|oldest_|leads_awaiting|lead_response_sla_breaches)"
)


def log(message: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


def history(leads_per_minute: float, days: float, seed: int = 7) -> list[dict[str, Any]]:
    now = time.time()
    model = TrafficModel(random.Random(seed), start=now - days * 86400, leads_per_minute=leads_per_minute,
                         reps=20, teams=2, id_prefix=f"m{uuid.uuid4().hex[:6]}")
    return model.due(now - 60)


class Run:
    """``salespulse run`` as a subprocess on one data directory and port."""

    def __init__(self, data_dir: Path, ephemeral: bool = False) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.ephemeral = ephemeral
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> float:
        """Start and wait for /readyz 200; returns the seconds it took."""
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPULSE_")}
        env |= {"SALESPULSE_DATA_DIR": str(self.data_dir), "SALESPULSE_HTTP_PORT": str(self.port)}
        args = [sys.executable, "-m", "salespulse", "run"]
        if self.ephemeral:
            args.append("--ephemeral")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir.parent / f"{self.data_dir.name}-run{self.starts}.log", "wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"run exited with {self.proc.returncode}; see {log_file.name}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def reseed_seconds(self) -> float | None:
        """The re-seed time the last start announced (the rest of its start is Faust and reprocessing)."""
        text = " ".join((self.data_dir.parent / f"{self.data_dir.name}-run{self.starts}.log").read_text().split())
        found = re.search(r"re-seeded in ([0-9.]+) s", text)
        return float(found.group(1)) if found else None

    def stop(self, sig: int = signal.SIGTERM) -> float:
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(sig)
        self.proc.wait(60)
        return time.perf_counter() - started


async def post_all(url: str, events: list[dict[str, Any]], concurrency: int = 4) -> float:
    chunks = [events[i : i + 500] for i in range(0, len(events), 500)]
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        queue = list(reversed(chunks))

        async def sender() -> None:
            while queue:
                body = orjson.dumps(queue.pop())
                async with session.post(f"{url}/webhooks/events", data=body) as response:
                    if response.status != 202:
                        raise RuntimeError(f"POST answered {response.status}: {await response.text()}")

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started


async def metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("salespulse_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def numbers(all_metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in all_metrics.items() if not _NOT_NUMBERS.match(k) and not k.endswith("_created")}


async def settle(url: str, at_least: int) -> dict[str, float]:
    """Wait until the worker consumed ``at_least`` records and its numbers stopped moving; returns them."""
    previous: dict[str, float] | None = None
    while True:
        current = await metrics(url)
        consumed = sum(v for k, v in current.items() if k.startswith("salespulse_worker_events_total"))
        if consumed >= at_least and numbers(current) == previous:
            return previous
        previous = numbers(current)
        await asyncio.sleep(1.0)


async def one_event_latencies(url: str, n: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            event = {"event_id": f"lat-{uuid.uuid4().hex}", "type": "call.logged", "lead_id": f"lat-{i}",
                     "rep_id": "rep-lat", "team": "bench", "outcome": "connected",
                     "occurred_at": datetime.now(UTC).isoformat()}
            started = time.perf_counter()
            async with session.post(f"{url}/webhooks/events", data=orjson.dumps(event)) as response:
                assert response.status == 202, await response.text()
            out.append((time.perf_counter() - started) * 1000)
    return out


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def bench_month(work: Path, rate: float, days: float) -> dict[str, Any]:
    events = history(rate, days)
    log(f"{days:g} days at {rate} leads/min: {len(events)} events")
    run = Run(work / f"history-{rate}-{days:g}d")
    first_start = await run.start()
    post_s = await post_all(run.url, events)
    before = await settle(run.url, len(events))
    result: dict[str, Any] = {"leads_per_minute": rate, "days": days, "events": len(events), "first_start_s": first_start,
                              "post_s": post_s, "ingest_events_per_s": len(events) / post_s,
                              "numbers_compared": len(before)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        name = signal.Signals(sig).name
        result[f"stop_{name}_s"] = run.stop(sig)
        result[f"restart_after_{name}_s"] = await run.start()
        result[f"reseed_after_{name}_s"] = run.reseed_seconds()
        after = await settle(run.url, len(events))
        differing = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        result[f"differing_after_{name}"] = differing[:20]
        log(f"  restart after {name}: ready in {result[f'restart_after_{name}_s']:.1f} s, "
            f"{len(differing)} of {len(before)} numbers differ")
    result["journal_mb"] = size_mb(run.data_dir / "journal")
    result["redis_aof_mb"] = size_mb(run.data_dir / "redis")
    run.stop()
    return result


async def bench_journal(work: Path, rate: float, days: float) -> dict[str, Any]:
    """A journal as a run that took the history live would have written it (each event arriving a second
    after it occurred), started twice: the time to ready, and whether both starts agree."""
    events = history(rate, days)
    run = Run(work / f"journal-{rate}-{days:g}d")
    writer = JournalWriter(run.data_dir / "journal")
    for event in events:
        parsed = EventAdapter.validate_python(event)
        arrived_ms = int(parsed.occurred_at.timestamp() * 1000) + 1000
        await writer.append([(EVENTS_TOPIC, parsed.partition_key.encode(), event_to_json(parsed), arrived_ms)])
    writer.close()
    log(f"journal of {days:g} days at {rate} leads/min written: {len(events)} events")
    result: dict[str, Any] = {"leads_per_minute": rate, "days": days, "events": len(events)}
    seen = []
    for start in (1, 2):
        result[f"start_{start}_s"] = await run.start()
        result[f"reseed_{start}_s"] = run.reseed_seconds()
        seen.append(await settle(run.url, len(events)))
        run.stop()
    result["numbers_compared"] = len(seen[0])
    result["differing_between_starts"] = sorted(k for k in set(seen[0]) | set(seen[1]) if seen[0].get(k) != seen[1].get(k))
    result["journal_mb"] = size_mb(run.data_dir / "journal")
    log(f"  ready in {result['start_1_s']:.1f} s and {result['start_2_s']:.1f} s; "
        f"{len(result['differing_between_starts'])} of {len(seen[0])} numbers differ between the two starts")
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="0.05,0.25", help="leads per minute of each month, comma-separated")
    parser.add_argument("--days", type=float, default=30, help="days of history per workload (30: a month)")
    parser.add_argument("--journal-days", type=float, default=0,
                        help="also start twice from a journal of this many days written as if taken live (0: no)")
    parser.add_argument("--latency-posts", type=int, default=300)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/restart-latest.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    log(f"scratch: {work}")
    results: dict[str, Any] = {"run_dir": str(work), "cores": os.cpu_count(), "months": []}

    for ephemeral in (True, False):
        run = Run(work / ("ephemeral" if ephemeral else "durable"), ephemeral=ephemeral)
        label = "ephemeral" if ephemeral else "durable"
        results[f"empty_start_{label}_s"] = await run.start()
        lat = await one_event_latencies(run.url, args.latency_posts)
        results[f"post_ms_{label}"] = {"p50": statistics.median(lat), "p99": pct(lat, 0.99), "mean": statistics.mean(lat)}
        run.stop()
        log(f"{label}: empty start {results[f'empty_start_{label}_s']:.1f} s, one-event POST p50 "
            f"{results[f'post_ms_{label}']['p50']:.2f} ms p99 {results[f'post_ms_{label}']['p99']:.2f} ms")

    for rate in (float(r) for r in args.rates.split(",")):
        results["months"].append(await bench_month(work, rate, args.days))

    if args.journal_days:
        results["journals"] = [await bench_journal(work, float(r), args.journal_days) for r in args.rates.split(",")]

    base = results["empty_start_ephemeral_s"]
    print("\nrestart to ready (ratio to an empty --ephemeral start of this run):")
    print(f"  empty --ephemeral start     {base:6.1f} s   1.00")
    print(f"  empty durable start         {results['empty_start_durable_s']:6.1f} s   "
          f"{results['empty_start_durable_s'] / base:.2f}")
    for month in results["months"]:
        for name in ("SIGTERM", "SIGKILL"):
            took = month[f"restart_after_{name}_s"]
            print(f"  {month['days']:g} days, {month['events']:>6} events, after {name:<7} {took:6.1f} s   {took / base:.2f}   "
                  f"(re-seed {month[f'reseed_after_{name}_s'] or 0:.1f} s) "
                  f"numbers differing: {len(month[f'differing_after_{name}'])} of {month['numbers_compared']}; "
                  f"journal {month['journal_mb']:.1f} MB, Redis AOF {month['redis_aof_mb']:.1f} MB")
    for journal in results.get("journals", []):
        for start in (1, 2):
            took = journal[f"start_{start}_s"]
            print(f"  journal of {journal['days']:g} days, {journal['events']:>6} events, start {start}   {took:6.1f} s   "
                  f"{took / base:.2f}   (re-seed {journal[f'reseed_{start}_s'] or 0:.1f} s) numbers differing between "
                  f"the starts: {len(journal['differing_between_starts'])} of {journal['numbers_compared']}; "
                  f"journal {journal['journal_mb']:.1f} MB")
    d, e = results["post_ms_durable"], results["post_ms_ephemeral"]
    print(f"one-event POST, durable / ephemeral: p50 {d['p50']:.2f} / {e['p50']:.2f} ms ({d['p50'] / e['p50']:.2f}x), "
          f"p99 {d['p99']:.2f} / {e['p99']:.2f} ms ({d['p99'] / e['p99']:.2f}x)")
    args.output.write_text(json.dumps(results, indent=2))
    log(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
