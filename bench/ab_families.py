"""A/B of the families' in-process cost: two checkouts of salespulse, the same workload, runs alternated.

On a shared machine one run of each is not enough: the load of other processes moves CPU-time rates
by 10-30 % within minutes. This runs ``bench_families.py`` (best of ``--repeat`` runs) for each family set,
alternating the baseline checkout (``--before``, e.g. ``git worktree add --detach DIR <commit>``; its own
``bench/bench_families.py`` is run when it has one) and this one, ``--rounds`` times, and prints the best rate of each and their ratio; the digests of the
aggregates must match (same numbers from both).

    .venv/bin/python bench/ab_families.py --before /tmp/before --rounds 7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="directory holding the baseline's salespulse/ package")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sets", default="activity,engagement,lead_response,pipeline,all_families")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per set within each subprocess (best kept)")
    parser.add_argument("--output", default="bench/results/families-ab-latest.json")
    args = parser.parse_args()
    variants = {"before": args.before, "after": str(HERE.parent)}
    best: dict[str, dict[str, float]] = {v: {} for v in variants}
    digests: dict[str, dict[str, str]] = {v: {} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in args.sets.split(","):
                for variant, code in variants.items():
                    out = Path(tmp) / f"{variant}-{name}-{r}.json"
                    # Each checkout's own benchmark script, when it has one: it builds the families its code has.
                    script = Path(code) / "bench" / "bench_families.py"
                    subprocess.run(
                        [sys.executable, str(script if script.exists() else HERE / "bench_families.py"), "--code", code, "--sets", name,
                         "--repeat", str(args.repeat), "--events", str(args.events), "--output", str(out)],
                        check=True, capture_output=True,
                    )
                    result = json.loads(out.read_text())["sets"][name]
                    best[variant][name] = max(best[variant].get(name, 0.0), result["events_per_s"])
                    digests[variant][name] = result["digest"]
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'family set':<24} {'before ev/s':>12} {'after ev/s':>12} {'after ÷ before':>15}  digests")
    summary = {}
    for name in args.sets.split(","):
        b, a = best["before"][name], best["after"][name]
        same = digests["before"][name] == digests["after"][name]
        summary[name] = {"before": b, "after": a, "ratio": round(a / b, 3), "same_aggregates": same}
        print(f"{name:<24} {b:>12,.0f} {a:>12,.0f} {a / b:>15.2f}  {'equal' if same else 'DIFFER'}")
    Path(args.output).write_text(json.dumps({"rounds": args.rounds, "repeat": args.repeat, "events": args.events,
                                             "before": args.before,
                                             "sets": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
