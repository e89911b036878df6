"""In-process cost of each metric family: the same batches processed and rendered per family set, no broker.

The workload is the simulator's ``TrafficModel`` (as in ``bench_worker.py``: ~200 reps in ~10 teams,
``occurred_at`` spread over the last hour, ~1 % redeliveries), keyed with ``partition_key`` and placed
on partitions with Kafka's default partitioner (murmur2), cut into batches of ~2,000 records that mix
partitions like ``take_events`` hands them over. Every family set runs the same batches through a
fresh ``BatchProcessor`` over plain dict tables, with a render of every family after every batch (a
flush per ~2,000 events); best of ``--repeat`` runs, in CPU seconds of the benchmark process (so that
time spent descheduled by other processes on a shared machine does not count). Rates are printed with their ratio to the
activity family alone measured in the same run (the machine is shared and noisy: read the ratios).

Each set also prints a digest of its final aggregate cells, so a change to the families' code can be
checked to leave every aggregate exactly as it was (same ``--events`` and ``--seed``).

    .venv/bin/python bench/bench_families.py                       # ~1-2 minutes on 2 cores
    .venv/bin/python bench/bench_families.py --profile engagement  # cProfile of one set, top by tottime
"""

from __future__ import annotations

from salespulse.engine.stores import family_context

import argparse
import cProfile
import gc
import hashlib
import io
import json
import pstats
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka.partitioner import murmur2

# ``--code DIR`` imports salespulse from another checkout (A/B runs: bench/ab_families.py); read before the imports.
_CODE = next((sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg == "--code"), None)
sys.path.insert(0, _CODE or str(Path(__file__).resolve().parent.parent))

from salespulse.config import Config  # noqa: E402
from salespulse.models.events import EventAdapter, event_to_json  # noqa: E402
from salespulse.simulate import TrafficModel  # noqa: E402
_ROOT = Path(_CODE) if _CODE else Path(__file__).resolve().parent.parent
# Chosen by what the checkout holds, not by trying imports: a module missing from an older checkout would be
# found in the editable install of this one, and the A/B would compare this code with itself.
if (_ROOT / "salespulse" / "engine").is_dir():
    from salespulse.engine.cells import CellStore
    from salespulse.engine.dedup import DedupIndex
    from salespulse.engine.processor import BatchProcessor
    from salespulse.engine.record_log import RecordLog
    from salespulse.families import registry
    from salespulse.families.activity.family import ActivityFamily
    from salespulse.families.engagement.family import EngagementFamily
    from salespulse.families.engagement.state import OUTREACH_CODEC
    from salespulse.families.lead_response.family import LeadResponseFamily
    from salespulse.families.lead_response.state import LEAD_CODEC
    from salespulse.families.pipeline.family import PipelineFamily
    from salespulse.families.pipeline.state import PIPELINE_CODEC
else:  # a checkout from before engine/ and families/
    from salespulse.streams.activity import ActivityFamily  # type: ignore[no-redef]
    from salespulse.streams.cells import CellStore  # type: ignore[no-redef]
    from salespulse.streams.dedup import DedupIndex  # type: ignore[no-redef]
    from salespulse.streams.engagement import EngagementFamily  # type: ignore[no-redef]
    from salespulse.streams.lead_response import LeadResponseFamily  # type: ignore[no-redef]
    from salespulse.streams.pipeline import PipelineFamily  # type: ignore[no-redef]
    from salespulse.streams.processor import BatchProcessor  # type: ignore[no-redef]
    from salespulse.streams.record_log import RecordLog  # type: ignore[no-redef]

    registry = None  # type: ignore[assignment]
# Every salespulse module measured must come from the checkout under test.
_MEASURED = [m for name, m in sys.modules.items() if name.startswith("salespulse") and getattr(m, "__file__", None)]
_ELSEWHERE = [m.__name__ for m in _MEASURED if not Path(m.__file__).resolve().is_relative_to(_ROOT.resolve())]
if _ELSEWHERE:
    raise SystemExit(f"modules loaded from outside {_ROOT}: {', '.join(sorted(_ELSEWHERE))}")

Record = tuple[int, int, bytes]
FAMILY_SETS: dict[str, tuple[str, ...]] = {
    "activity": ("activity",),
    "lead_response": ("lead_response",),
    "engagement": ("engagement",),
    "pipeline": ("pipeline",),
    "activity+engagement": ("activity", "engagement"),
    "activity+lead_response+engagement": ("activity", "lead_response", "engagement"),
    "all_families": ("activity", "lead_response", "pipeline", "engagement"),
}
_RETENTION_S = 35 * 86400


def build_batches(n: int, seed: int, reps: int, teams: int, partitions: int, dup_rate: float, now: float) -> list[list[Record]]:
    """``n`` records (redeliveries included) as batches of ~2,000 mixing partitions, offsets in order per partition."""
    n_dup = round(n * dup_rate)
    model = TrafficModel(
        random.Random(seed),
        start=now - 3600,
        leads_per_minute=max(1.0, 15.0 * n / 100_000),
        reps=reps,
        teams=teams,
        speedup=24.0,
        id_prefix=f"fam-{seed}",
    )
    dicts: list[dict[str, Any]] = []
    t = now - 3600
    while len(dicts) < n - n_dup:
        t += 5.0
        dicts += model.due(t)
    dicts = dicts[: n - n_dup]
    # occurred_at spread linearly (order kept) over the last hour, as bench_worker does.
    times = [datetime.fromisoformat(d["occurred_at"]).timestamp() for d in dicts]
    lo, hi = min(times), max(times)
    scale = 3599 / max(hi - lo, 1e-9)
    for d, ts in zip(dicts, times):
        d["occurred_at"] = datetime.fromtimestamp(now - 3600 + (ts - lo) * scale, UTC).isoformat(timespec="milliseconds")
    ordered: list[tuple[float, bytes, bytes]] = []
    for i, d in enumerate(dicts):
        event = EventAdapter.validate_python(d)
        ordered.append((float(i), event.partition_key.encode(), event_to_json(event)))
    rng = random.Random(seed + 1)
    for i in rng.sample(range(len(ordered)), n_dup):
        _, key, value = ordered[i]
        ordered.append((i + rng.randint(1, 2000) + 0.5, key, value))
    ordered.sort(key=lambda r: r[0])
    by_partition: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    for _, key, value in ordered:
        p = (murmur2(key) & 0x7FFFFFFF) % partitions
        by_partition[p].append((p, len(by_partition[p]), value))
    per = max(1, 2000 // partitions)
    batches: list[list[Record]] = []
    cursor = 0
    while any(cursor < len(recs) for recs in by_partition.values()):
        batches.append([r for recs in by_partition.values() for r in recs[cursor : cursor + per]])
        cursor += per
    return batches


def build_families(table: dict[str, bytes], names: tuple[str, ...]) -> list[Any]:
    """The families of a set as the worker builds them (default config: no targets, default pipeline)."""
    utc = ZoneInfo("UTC")
    if registry is not None:  # the registry builds every family, as in the worker
        context = family_context(table, Config(), utc, _RETENTION_S, 300)
        return [registry.load(name).build(context) for name in names]
    out: list[Any] = []
    for name in names:
        if name == "activity":
            out.append(ActivityFamily(CellStore(table, "activity"), utc, _RETENTION_S))
        elif name == "lead_response":
            # As that checkout's worker builds it: the SLA clock in business hours (around the clock by default).
            from salespulse.streams import worker  # type: ignore[attr-defined]

            config = Config()
            out.append(LeadResponseFamily(
                CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), utc, _RETENTION_S, sla_s=300,
                deadline_of=worker._deadline_function(config, 300), business_seconds=worker._business_seconds_function(config),
            ))
        elif name == "engagement":
            out.append(EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), utc, _RETENTION_S))
        elif name == "pipeline":
            out.append(
                PipelineFamily(
                    CellStore(table, "pipeline"), RecordLog(table, "pstate", PIPELINE_CODEC), utc, _RETENTION_S,
                    pipelines=Config().pipeline_specs(),
                )
            )
    return out


def run_set(batches: list[list[Record]], names: tuple[str, ...], now: float, partitions: int) -> dict[str, Any]:
    """One pass: process + render every batch; seconds of each, partials rendered, digest of the final cells."""
    table: dict[str, bytes] = {}
    families = build_families(table, names)
    processor = BatchProcessor(DedupIndex(table, 72 * 3600), families, lambda r, why: None)
    owned = set(range(partitions))
    process_s = render_s = 0.0
    partials = 0
    step = 0.25
    # CPU time of this process, not wall time: on a shared machine, time spent descheduled is not ours.
    clock = time.process_time
    for i, batch in enumerate(batches):
        at = now + i * step
        t0 = clock()
        processor.process(batch, now=at)
        t1 = clock()
        for family in families:
            partials += len(family.render(owned, now=at))
        t2 = clock()
        process_s += t1 - t0
        render_s += t2 - t1
    return {"process_s": process_s, "render_s": render_s, "partials": partials, "digest": cells_digest(families, partitions)}


def cells_digest(families: list[Any], partitions: int) -> str:
    """SHA-256 over every family's aggregate cells (watermarks left out): equal digests, equal aggregates."""
    h = hashlib.sha256()
    for family in families:
        for p in range(partitions):
            for name, cell in sorted(family.cells.items(p)):
                body = {k: v for k, v in cell.items() if k != "wm"}
                h.update(f"{family.name}|{p}|{name}|".encode())
                h.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()[:16]


def profile_set(batches: list[list[Record]], names: tuple[str, ...], now: float, partitions: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_set(batches, names, now, partitions)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def code_version() -> dict[str, Any]:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--", "salespulse")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "salespulse_uncommitted": changed.splitlines() if changed else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000, help="records, redeliveries included")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--dup-rate", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per set")
    parser.add_argument("--sets", default=",".join(FAMILY_SETS), help="comma-separated family sets to time")
    parser.add_argument("--no-gc", action="store_true", help="cyclic GC off while timing (what it costs)")
    parser.add_argument("--gc-threshold", metavar="G0,G1,G2", help="gc.set_threshold while timing, e.g. 50000,20,100")
    parser.add_argument("--profile", metavar="SET", help="print a cProfile of one set instead of timing")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--output", default="bench/results/families-latest.json")
    parser.add_argument("--code", metavar="DIR", help="import salespulse from this checkout instead of this one")
    args = parser.parse_args()

    # A fixed clock (not the wall clock): same workload and digests whenever the script runs.
    now = 1_795_000_000.0
    t0 = time.perf_counter()
    batches = build_batches(args.events, args.seed, args.reps, args.teams, args.partitions, args.dup_rate, now)
    n = sum(len(b) for b in batches)
    print(f"workload: {n} records in {len(batches)} batches, built in {time.perf_counter() - t0:.1f} s")

    if args.no_gc:
        gc.disable()
    if args.gc_threshold:
        gc.set_threshold(*(int(part) for part in args.gc_threshold.split(",")))
    if args.profile:
        print(profile_set(batches, FAMILY_SETS[args.profile], now, args.partitions, args.top))
        return

    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    if "activity" not in wanted:
        wanted.insert(0, "activity")
    results: dict[str, Any] = {}
    # Round-robin over the sets, so that a noisy minute hits every set rather than one.
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for name in wanted:
            run = run_set(batches, FAMILY_SETS.get(name, tuple(name.split("+"))), now, args.partitions)
            total = run["process_s"] + run["render_s"]
            if name in best and best[name]["digest"] != run["digest"]:
                raise SystemExit(f"{name}: digest changed between runs (non-deterministic aggregates)")
            if name not in best or total < best[name]["process_s"] + best[name]["render_s"]:
                best[name] = run
    base = n / (best["activity"]["process_s"] + best["activity"]["render_s"])
    print(f"{'family set':<36} {'events/s':>10} {'÷ activity':>10} {'process/s':>10} {'render ms':>10} {'partials':>9}  digest")
    for name in wanted:
        run = best[name]
        rate = n / (run["process_s"] + run["render_s"])
        results[name] = {
            "events_per_s": round(rate, 1),
            "ratio_to_activity": round(rate / base, 3),
            "process_events_per_s": round(n / run["process_s"], 1),
            "render_s": round(run["render_s"], 3),
            "partials": run["partials"],
            "digest": run["digest"],
        }
        print(
            f"{name:<36} {rate:>10,.0f} {rate / base:>10.3f} {n / run['process_s']:>10,.0f} "
            f"{run['render_s'] * 1000:>10,.0f} {run['partials']:>9,}  {run['digest']}"
        )
    out = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": {"dir": args.code} if args.code else code_version(),
        "args": vars(args),
        "records": n,
        "batches": len(batches),
        "sets": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
