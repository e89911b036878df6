#!/usr/bin/env python
"""Memory and speed of ``DedupIndex`` per event id: 1,000,000 ids over 4 partitions, a record every 2,000.

    .venv/bin/python bench/dedup_memory.py                 # this checkout
    .venv/bin/python bench/dedup_memory.py --code DIR      # another checkout's salespulse/ (A/B)

Prints resident bytes per id (growth of this process), admits per second and changelog bytes per id.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import time
from pathlib import Path


def rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--ids", type=int, default=1_000_000)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("dedup", args.code / "salespulse" / "engine" / "dedup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table: dict[str, bytes] = {}
    index = module.DedupIndex(table, 1e9)
    for partition in range(4):
        index.load_partition(partition)
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    for i in range(args.ids):
        index.admit(i % 4, f"month-1-3f9a2c-lead-{i:07d}-evt-{i % 7}", i // 4)  # ids shaped like the simulator's
        if i % 2000 == 1999:
            for partition in range(4):
                index.write_pending(partition, 1000.0)
    seconds = time.perf_counter() - started
    gc.collect()
    print(
        f"{args.code}: {(rss_mb() - before) * 2**20 / args.ids:.0f} B resident per id, "
        f"{args.ids / seconds:,.0f} admits/s, {sum(len(v) for v in table.values()) / args.ids:.1f} changelog B per id"
    )


if __name__ == "__main__":
    main()
