#!/usr/bin/env python
"""In-process cost of the worker's cycle over a month of history: stage, persist and render, as the worker does them.

No broker: the first ``--events`` records of ``bench_month.py``'s workload (same cache) on 4 partitions,
through a ``BatchProcessor`` of all four families over a dict table (Faust's memory store keeps the same
bytes). Like the worker: each batch of 2,000 records is staged, the staged batches are persisted every
``--persist-every`` (5: a commit every ~10,000 records) and every family renders after each batch with the
flusher's slow budget. Reported: events per CPU second (``time.process_time``, so other processes on the
machine count less), the CPU seconds of staging, persisting and rendering, the partials rendered, the
table writes and their bytes (the changelog's traffic), and the rate over each fifth of the history (does
the per-event cost grow with it?). ``--profile`` prints a cProfile of the whole run instead of timing it.

    .venv/bin/python bench/month_cost.py --events 200000
    .venv/bin/python bench/month_cost.py --code /tmp/old-tree        # another checkout's salespulse/ (A/B)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--events", type=int, default=200_000)
parser.add_argument("--total", type=int, default=1_000_000, help="the cached workload the records are cut from")
parser.add_argument("--persist-every", type=int, default=5, help="batches staged per persist (a commit)")
parser.add_argument("--budget", type=int, default=62, help="slow budget per family and render (250 / 4 families)")
parser.add_argument("--code", type=Path, help="a checkout whose salespulse/ to measure (default: this one)")
parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
args = parser.parse_args()

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str((args.code or HERE.parent).resolve()))


import bench_month  # noqa: E402
from month_setup import month_processor, placed  # noqa: E402
from salespulse.engine.processor import StagedBatch  # noqa: E402

PARTITIONS = 4


class CountingTable(dict[str, bytes]):
    """A dict table that counts its writes and their bytes (what the changelog would carry)."""

    writes = 0
    written_bytes = 0

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes += 1
        self.written_bytes += len(value)
        super().__setitem__(key, value)


def main() -> dict[str, Any]:
    workload = bench_month.month_workload(max(args.total, args.events), 1, 300, 15, 0.01, 30.0)
    records = placed(workload.records[: args.events], PARTITIONS)
    del workload
    table = CountingTable()
    families, processor = month_processor(table)
    owned = set(range(PARTITIONS))
    stage_s = persist_s = render_s = 0.0
    partials = 0
    pending: StagedBatch | None = None
    fifths: list[int] = []
    fifth = max(1, args.events // 5)
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    last = time.process_time()
    for batch, start in enumerate(range(0, len(records), 2000), 1):
        now = time.time()
        t0 = time.process_time()
        staged = processor.stage(records[start : start + 2000], now)
        t1 = time.process_time()
        pending = staged if pending is None else pending.merge(staged)
        if batch % args.persist_every == 0:
            processor.persist(pending)
            pending = None
        t2 = time.process_time()
        for family in families:
            partials += len(family.render(owned, now, slow_budget=args.budget))
        t3 = time.process_time()
        stage_s, persist_s, render_s = stage_s + t1 - t0, persist_s + t2 - t1, render_s + t3 - t2
        if start + 2000 >= (len(fifths) + 1) * fifth:
            fifths.append(round(fifth / (t3 - last)))
            last = t3
    if pending is not None:
        processor.persist(pending)
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    total = stage_s + persist_s + render_s
    return {
        "events": args.events,
        "code": str(args.code or HERE.parent),
        "events_per_cpu_s": round(args.events / total),
        "stage_cpu_s": round(stage_s, 2),
        "persist_cpu_s": round(persist_s, 2),
        "render_cpu_s": round(render_s, 2),
        "partials": partials,
        "table_writes": table.writes,
        "table_written_mb": round(table.written_bytes / 2**20, 1),
        "events_per_cpu_s_by_fifth": fifths,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
