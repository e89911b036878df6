"""Redis cost of the merge script: the flushes of a live worker replayed into a real Redis server.

The workload is ``bench_families.py``'s (the simulator's traffic, ~200 reps in ~10 teams, 4 partitions),
processed by every metric family in process and cut into flushes as the worker makes them at
``--rate`` events/s with a flush every ``--flush-ms`` (renders with the worker's slow budget), so each
flush is the set of partials the worker would send. Every flush is then published to a fresh embedded
Redis twice, alternating:

* **baseline** — the cheapest write of the same values: one pipelined ``HSET`` of each partial's fields
  into a hash per key and partition, no script, no totals;
* **merge** — ``RedisPublisher.publish``, the worker's path (partials, totals, derived fields, team
  values beside reps, pub/sub).

Redis's own time (``INFO commandstats``: microseconds in EVALSHA and HSET) is the figure that matters, as
Redis is single-threaded and the flush waits on it; wall time per flush is printed beside it. Read the
ratio merge ÷ baseline of the same run: the machine is shared and noisy.

    .venv/bin/python bench/bench_redis_merge.py                  # ~1 minute
    .venv/bin/python bench/bench_redis_merge.py --code /tmp/old  # the same, with another checkout's salespulse
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# ``--code DIR`` imports salespulse from another checkout (A/B runs); read before the imports.
_CODE = next((sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg == "--code"), None)
sys.path.insert(0, _CODE or str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis  # noqa: E402

from bench_families import build_batches, build_families, code_version  # noqa: E402
from salespulse.config import Config  # noqa: E402
from salespulse.embedded.redis_server import EmbeddedRedis  # noqa: E402
from salespulse.families.engagement.spec import redis_derived_spec as engagement_derived_spec  # noqa: E402
from salespulse.families.lead_response.rules import redis_derived_spec  # noqa: E402
from salespulse.families.pipeline.spec import redis_derived_spec as pipeline_derived_spec  # noqa: E402
from salespulse.outputs.aggregates import Partial  # noqa: E402
from salespulse.outputs.redis import RedisPublisher  # noqa: E402
from salespulse.engine.dedup import DedupIndex  # noqa: E402
from salespulse.engine.processor import BatchProcessor  # noqa: E402

FAMILIES = ("activity", "lead_response", "pipeline", "engagement")


def worker_flushes(args: argparse.Namespace) -> list[list[Partial]]:
    """The partials of each flush a worker makes at ``args.rate`` events/s, flushing every ``args.flush_ms``."""
    now = time.time()
    batches = build_batches(args.events, args.seed, 200, 10, args.partitions, 0.01, now)
    per_flush = max(1, round(args.rate * args.flush_ms / 1000))
    records = [r for batch in batches for r in batch]
    table: dict[str, bytes] = {}
    families = build_families(table, FAMILIES)
    processor = BatchProcessor(DedupIndex(table, 72 * 3600), families, lambda r, why: None)
    owned = set(range(args.partitions))
    budget = max(1, args.slow_budget // len(families))
    flushes: list[list[Partial]] = []
    for i in range(0, len(records), per_flush):
        at = now + (i // per_flush) * args.flush_ms / 1000
        processor.process(records[i : i + per_flush], now=at)
        flush: list[Partial] = []
        for family in families:
            flush += family.render(owned, now=at, slow_budget=budget)
        flushes.append(flush)
    return flushes


async def redis_usec(client: aioredis.Redis, commands: tuple[str, ...]) -> int:
    stats = await client.info("commandstats")
    return sum(int((stats.get(f"cmdstat_{name}") or {}).get("usec", 0)) for name in commands)


async def baseline_write(client: aioredis.Redis, partials: list[Partial]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for p in partials:
            if p.fields:
                pipe.hset(f"{p.redis_key}#base{p.partition}", mapping=p.fields)
        await pipe.execute()


async def measure(args: argparse.Namespace, flushes: list[list[Partial]]) -> dict[str, Any]:
    server = EmbeddedRedis()
    await server.astart()
    client = aioredis.Redis.from_url(server.url)
    try:
        publisher = RedisPublisher(
            client,
            derived={
                "lead_response": redis_derived_spec(),
                "pipeline": pipeline_derived_spec(Config().pipeline_specs(), ["USD"]),
                "engagement": engagement_derived_spec(),
            },
            beside={"engagement": build_families({}, ("engagement",))[0].beside_rates},
        )
        runs: dict[str, dict[str, list[float]]] = {
            name: {"redis_ms": [], "wall_ms": []} for name in ("baseline", "merge")
        }
        for flush in flushes:
            for name in ("baseline", "merge"):
                commands = ("hset",) if name == "baseline" else ("evalsha", "eval")
                before = await redis_usec(client, commands)
                started = time.perf_counter()
                if name == "baseline":
                    await baseline_write(client, flush)
                else:
                    await publisher.publish(flush)
                runs[name]["wall_ms"].append((time.perf_counter() - started) * 1000)
                runs[name]["redis_ms"].append((await redis_usec(client, commands) - before) / 1000)
        keys = [len({p.redis_key for p in flush}) for flush in flushes]
        out: dict[str, Any] = {
            "flushes": len(flushes),
            "partials_per_flush": statistics.mean(len(f) for f in flushes),
            "keys_per_flush": statistics.mean(keys),
        }
        for name, run in runs.items():
            out[name] = {
                "redis_ms_total": round(sum(run["redis_ms"]), 1),
                "redis_ms_per_flush_mean": round(statistics.mean(run["redis_ms"]), 2),
                "redis_ms_per_flush_p99": round(sorted(run["redis_ms"])[int(0.99 * (len(run["redis_ms"]) - 1))], 2),
                "wall_ms_per_flush_mean": round(statistics.mean(run["wall_ms"]), 2),
            }
        out["merge_over_baseline_redis"] = round(out["merge"]["redis_ms_total"] / out["baseline"]["redis_ms_total"], 2)
        out["merge_redis_us_per_key"] = round(out["merge"]["redis_ms_total"] * 1000 / max(1, sum(keys)), 1)
        return out
    finally:
        await client.aclose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="records processed (redeliveries included)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s the flushes are cut at")
    parser.add_argument("--flush-ms", type=float, default=250.0, help="the worker's flush interval")
    parser.add_argument("--slow-budget", type=int, default=250, help="the worker's SALESPULSE_FLUSH_SLOW_BUDGET")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--code", type=Path, default=None, help="import salespulse from this checkout")
    args = parser.parse_args()
    started = time.perf_counter()
    flushes = worker_flushes(args)
    print(f"{len(flushes)} flushes built in {time.perf_counter() - started:.1f} s", flush=True)
    result = asyncio.run(measure(args, flushes))
    result["code"] = code_version() if args.code is None else {"code_dir": str(args.code)}
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
