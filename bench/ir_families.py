"""Instructions executed per family set, two checkouts compared: a measure that the machine's load cannot move.

CPU-time rates on the shared 2-core machine swing by 10-30 % between runs minutes apart, more than many
single optimisations gain. This counts the instructions (``valgrind --tool=cachegrind``, ``I refs``)
of one ``bench_families.run_set`` per family set over ``--events`` records (default 10,000: valgrind
runs Python ~50 x slower), minus the same process with the workload built and no set run, for the
baseline checkout (``--before DIR``, e.g. ``git archive <commit> salespulse | tar -x -C DIR``) and this
one. Deterministic up to a few per mille (hash seeds, GC timing).

    .venv/bin/python bench/ir_families.py --before /tmp/before     # ~10 minutes, two at a time
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
_ONE = """
import sys
code, name, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.argv = [sys.argv[0], "--code", code]
sys.path.insert(0, {bench!r})
import bench_families as bf
import salespulse
assert salespulse.__file__.startswith(code), salespulse.__file__
now = 1_795_000_000.0
batches = bf.build_batches(events, 7, 200, 10, 4, 0.01, now)
if name != "none":
    print("digest", bf.run_set(batches, bf.FAMILY_SETS[name], now, 4)["digest"])
"""


def count(script: Path, code: str, name: str, events: int, tmp: Path) -> tuple[int, str]:
    """Instructions of one run, and the digest of the aggregates it printed."""
    out = tmp / f"{abs(hash((code, name)))}.cg"
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
         sys.executable, str(script), code, name, str(events)],
        capture_output=True, text=True, check=True,
    )
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if refs is None:
        raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    digest = re.search(r"digest (\w+)", done.stdout)
    return int(refs.group(1).replace(",", "")), digest.group(1) if digest else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="directory holding the baseline's salespulse/ package")
    parser.add_argument("--sets", default="activity,engagement,lead_response,pipeline,all_families")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", default="bench/results/families-ir-latest.json")
    args = parser.parse_args()
    variants = {"before": str(Path(args.before).resolve()), "after": str(HERE.parent)}
    names = ["none", *args.sets.split(",")]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        script = tmp / "one.py"
        script.write_text(_ONE.format(bench=str(HERE)))
        jobs = {(v, n): (code, n) for v, code in variants.items() for n in names}
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {key: pool.submit(count, script, code, n, args.events, tmp) for key, (code, n) in jobs.items()}
            results = {key: future.result() for key, future in futures.items()}
    print(f"{'family set':<24} {'before Ir/event':>16} {'after Ir/event':>15} {'after ÷ before':>15}  aggregates")
    summary = {}
    for name in names[1:]:
        per = {v: (results[(v, name)][0] - results[(v, "none")][0]) / args.events for v in variants}
        same = results[("before", name)][1] == results[("after", name)][1]
        summary[name] = {"before_ir_per_event": round(per["before"]), "after_ir_per_event": round(per["after"]),
                         "ratio": round(per["after"] / per["before"], 3), "same_aggregates": same}
        print(f"{name:<24} {per['before']:>16,.0f} {per['after']:>15,.0f} {per['after'] / per['before']:>15.3f}  "
              f"{'equal' if same else 'DIFFER'}")
    Path(args.output).write_text(json.dumps({"events": args.events, "before": args.before, "sets": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
