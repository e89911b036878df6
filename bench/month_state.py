#!/usr/bin/env python
"""In-process state of a month of history: what each store holds, and how memory and cost grow with history.

No broker: the first ``--events`` records of ``bench_month.py``'s workload (same cache) go through a
``BatchProcessor`` built like the worker's (all four families from the registry, ``CellStore`` /
``RecordLog`` / ``DedupIndex`` over one dict table standing in for Faust's memory store, which keeps
the same encoded bytes), in batches of 2,000 records over 4 partitions, persisted after every batch.
Reported per size: events/s (process CPU time), the state's resident memory (resident with it minus
resident once it is freed, after ``malloc_trim``) in total and per event, and
per store prefix the table's keys and encoded bytes (Faust's copy) beside the decoded working copy
(the bytes of its Python objects), and the CPU time a new worker's families take to load every partition
from the table (a restart's in-process part).

    .venv/bin/python bench/month_state.py --events 200000 1000000   # each size in its own process
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from month_setup import month_processor, placed  # noqa: E402




def trimmed_rss_mb() -> float:
    """Resident memory after a full collection and glibc's ``malloc_trim`` (free memory handed back)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of ``root`` and every object it reaches through containers and slots, each counted once."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(type(obj), "__slots__"):
            stack.extend(getattr(obj, name) for name in type(obj).__slots__ if hasattr(obj, name))
    return total


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(events: int, partitions: int, args: argparse.Namespace) -> dict[str, Any]:
    import bench_month  # the workload cache

    workload = bench_month.month_workload(args.total, args.seed, args.reps, args.teams, 0.01, 30.0)
    records = workload.records[:events]
    del workload
    records_placed = placed(records, partitions)
    del records
    gc.collect()
    table: dict[str, bytes] = {}
    families, processor = month_processor(table)
    cpu0 = time.process_time()
    for start in range(0, len(records_placed), 2000):
        processor.process(records_placed[start : start + 2000])
    cpu = time.process_time() - cpu0
    del records_placed
    keys: Counter[str] = Counter()
    encoded: Counter[str] = Counter()
    for key, value in table.items():
        prefix = key.split("|")[1]
        keys[prefix] += 1
        encoded[prefix] += len(value)
    totals = processor.totals
    # The state's memory: resident with it minus resident once it is gone (freed memory handed back
    # to the system), so that what the workload's generation left behind does not count.
    # Each store's working copy: the bytes of the Python objects it holds (each object counted once).
    seen: set[int] = set()
    stores = [store for family in families for store in family.stores]
    working = {
        store.prefix: round(sum(deep_size(store.loaded(p), seen) for p in sorted(store.partitions)) / 2**20, 1)
        for store in stores
    }
    # A copy of the table for the reload below, taken before both measurements so that it counts in neither.
    rows = {key: memoryview(value).tobytes() for key, value in table.items()}
    with_state = trimmed_rss_mb()
    families.clear()
    table.clear()
    del processor
    grown = with_state - trimmed_rss_mb()
    # A restart's in-process part: a new worker's families load every partition from the table (CPU seconds).
    _, reloaded = month_processor(rows)
    load0 = time.process_time()
    for partition in range(partitions):
        reloaded.ensure_loaded(partition)
    load_cpu = time.process_time() - load0
    return {
        "events": events,
        "events_per_cpu_s": round(events / cpu),
        "load_cpu_s": round(load_cpu, 2),
        "state_rss_mb": round(grown, 1),
        "rss_bytes_per_event": round(grown * 2**20 / events),
        "table_encoded_mb": round(sum(encoded.values()) / 2**20, 1),
        "by_prefix": {
            p: {"keys": keys[p], "encoded_mb": round(encoded[p] / 2**20, 2), "working_mb": working.get(p)}
            for p in sorted(keys)
        },
        "processed": totals.processed,
        "duplicates": totals.duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--total", type=int, default=1_000_000, help="the cached workload the sizes are cut from")
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--teams", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process measuring one size
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.partitions, args)))
        return
    results = []
    for size in args.events:
        argv = [sys.executable, __file__, "--one", str(size), "--total", str(max(args.total, size)),
                "--reps", str(args.reps), "--teams", str(args.teams), "--seed", str(args.seed)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
