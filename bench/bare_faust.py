"""Baseline B of ``bench_worker.py``: bare Faust iteration over ``salespulse.events``.

A minimal Faust app (the worker's own ``faust_settings``, so the Tansu workarounds apply) with one agent
that takes batches with ``stream.take_events(2000, within=0.1)`` and raw values and only counts them.
No parsing, no tables, no publishing: the cost of Faust's consumer and stream machinery alone.

Run by ``bench_worker.py`` as a subprocess::

    python bench/bare_faust.py --kafka-url kafka://127.0.0.1:PORT --app-id bench-bare-x --events 100000 \
        --out r.json --data-dir /tmp/bare-data

It prints ``first <unix time> <count>`` at the first batch and ``done <unix time> <count>`` once ``--events``
records were seen, writes the same as JSON to ``--out`` (atomically), and keeps running until terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from salespulse.settings import Settings  # noqa: E402
from salespulse.topics import EVENTS_TOPIC  # noqa: E402
from salespulse.engine.worker import faust_settings  # noqa: E402


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka-url", required=True, help="kafka://host:port")
    parser.add_argument("--app-id", required=True, help="a unique Faust app id (consumer group)")
    parser.add_argument("--events", type=int, required=True, help="records to count before reporting")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2000, help="take_events max batch size")
    parser.add_argument("--within", type=float, default=0.1, help="take_events max wait (s)")
    parser.add_argument("--tansu-compat", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    parser.add_argument("--data-dir", type=Path, required=True, help="Faust's data directory (created)")
    args = parser.parse_args()

    settings = Settings(
        kafka_url=args.kafka_url,
        app_id=args.app_id,
        partitions=args.partitions,
        tansu_compat=args.tansu_compat,
        data_dir=args.data_dir,
    )
    options = faust_settings(settings)
    # Faust makes <datadir>/<id>-data even for memory://; without a datadir option it uses the cwd.
    options.setdefault("datadir", str(args.data_dir / "faust"))
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    topic = app.topic(EVENTS_TOPIC, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    state: dict[str, Any] = {"count": 0, "batches": 0, "t_first": None, "n_first": 0, "done": False}

    async def count(stream: faust.StreamT) -> None:
        async for events in stream.take_events(args.batch, within=args.within):
            now = time.time()
            n = len(events)
            if state["t_first"] is None:
                state["t_first"], state["n_first"] = now, n
                print(f"first {now:.6f} {n}", flush=True)
            state["count"] += n
            state["batches"] += 1
            if not state["done"] and state["count"] >= args.events:
                state["done"] = True
                state["t_last"] = time.time()
                print(f"done {state['t_last']:.6f} {state['count']}", flush=True)
                _write_json(args.out, state)

    app.agent(topic, name="bench.bare_count")(count)
    worker = faust.Worker(app, loglevel="warning", redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
