"""Scrapes and health checks during the load of a large recovered state (issue 11, finding 7).

A worker that takes partitions over loads their changelogged state into memory. That load used to run
synchronously inside the first scrape (``owned_partitions``), blocking the event loop, so ``/metrics`` and
``/healthz`` went unanswered for as long as the load took. Here the real ``WorkerRuntime`` takes over four
partitions of a large state while a client keeps asking both."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from faust.types import TP
from prometheus_client import CollectorRegistry

from salespulse.handlers.http import build_http_app
from salespulse.families.keys import encode
from salespulse.settings import Settings
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine import processor as processor_module
from salespulse.engine.faust.tables import decode_rows
from salespulse.engine.memory import THRESHOLDS
from salespulse.engine.processor import BatchProcessor
from salespulse.topics import EVENTS_TOPIC
from salespulse.engine.worker import WorkerRuntime
from tests.integration.stack import metric_value

PARTITIONS = 8
REPS = 20_000  # per partition, in the windows Redis gets: much to load, little to scrape; eight partitions, so
# that the loop waits for one partition's share of the load at most (a small part of the whole), not for it all


def large_state() -> dict[str, bytes]:
    rows: dict[str, bytes] = {}
    for p in range(PARTITIONS):
        reps = {f"rep-{p}-{i}": {"call:connected": 1} for i in range(REPS)}
        for name in ("all|-", "day|2026-11-22", "week|2026-W47", "month|2026-11"):
            cell = {"wm": 9, "rep": reps, "team": {"emea": {"call:connected": REPS}}}
            if name == "all|-":  # the labels of salespulse_activities_total: a few, so a scrape stays cheap
                cell["rep_team"] = {encode((f"rep-{p}-{i}", "emea")): {"call:connected": 1} for i in range(10)}
            rows[f"{p}|activity|{name}"] = orjson.dumps(cell)
    return rows


def runtime_owning_everything(tmp_path: Path, rows: dict[str, bytes], registry: CollectorRegistry) -> WorkerRuntime:
    settings = Settings(kafka_url="kafka://127.0.0.1:9", data_dir=tmp_path, families="activity", partitions=PARTITIONS)
    runtime = WorkerRuntime(settings, registry, aioredis.Redis.from_url("redis://127.0.0.1:9"))
    runtime.table.data.update(rows)  # as recovered from the changelog
    assigned = {TP(EVENTS_TOPIC, p) for p in range(PARTITIONS)}
    runtime.app = SimpleNamespace(  # a joined, recovered app (no broker here: its consumer knows no offsets)
        rebalancing=False,
        assignor=SimpleNamespace(assigned_actives=lambda: assigned),
        consumer=SimpleNamespace(highwater=lambda tp: None),
    )
    return runtime


@pytest.fixture
def worker_gc() -> Iterator[None]:
    """The collector's thresholds as the worker sets them (``engine.memory``): with the defaults, a full
    collection over the large state loaded here pauses the loop for a third of a second, whatever the load."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    yield
    gc.set_threshold(*before)


async def test_metrics_and_healthz_answer_while_a_large_state_loads(tmp_path: Path, worker_gc: None) -> None:
    rows = large_state()
    # Baseline, same run: how long loading these partitions takes in one go.
    baseline = runtime_owning_everything(tmp_path / "baseline", rows, CollectorRegistry())
    started = time.perf_counter()
    for p in range(PARTITIONS):
        baseline.processor.ensure_loaded(p)
    load_s = time.perf_counter() - started
    del baseline

    registry = CollectorRegistry()
    runtime = runtime_owning_everything(tmp_path / "worker", rows, registry)
    slowest = 0.0
    async with TestClient(TestServer(build_http_app(registry, {}))) as client:

        async def timed(path: str) -> tuple[float, str]:
            t0 = time.perf_counter()
            async with client.get(path) as response:
                assert response.status == 200
                text = await response.text()
            return time.perf_counter() - t0, text

        deadline = time.monotonic() + 60
        while runtime.processor.loaded != set(range(PARTITIONS)):
            assert time.monotonic() < deadline, "the partitions never loaded"
            for seconds, _ in await asyncio.gather(timed("/metrics"), timed("/healthz")):
                slowest = max(slowest, seconds)
            await asyncio.sleep(0.02)
        _, text = await timed("/metrics")

    assert slowest < 2.0
    assert slowest < load_s / 2, f"a request waited {slowest:.2f} s; loading takes {load_s:.2f} s in one go"
    assert metric_value(text, "salespulse_activities_total", rep="rep-3-7", outcome="connected") == 1


def _counting_processor(rows: dict[str, bytes]) -> tuple[BatchProcessor, ActivityFamily]:
    family = ActivityFamily(CellStore(rows, "activity"), ZoneInfo("UTC"), 35 * 86400)
    return BatchProcessor(DedupIndex(rows, 72 * 3600), [family], lambda record, why: None), family


def _call(offset: int) -> tuple[int, int, bytes]:
    return (0, offset, orjson.dumps({"event_id": f"c{offset}", "type": "call.logged", "occurred_at": "2026-11-22T14:00:00Z",
                                      "lead_id": "L", "rep_id": "anna", "outcome": "connected"}))


async def test_a_background_load_overtaken_by_a_batch_does_not_install_older_state() -> None:
    rows: dict[str, bytes] = {}
    first, _ = _counting_processor(rows)
    first.process([_call(0)])
    processor, family = _counting_processor(rows)
    loading = asyncio.ensure_future(processor.load([0]))
    await asyncio.sleep(0)  # the load reads its rows and decodes them in a thread
    processor.process([_call(1)])  # a batch loads the partition at once and counts
    await loading
    assert family.all_time([0], "rep")["anna"]["call:connected"] == 2


async def test_a_partition_revoked_while_it_loads_is_not_installed() -> None:
    rows: dict[str, bytes] = {}
    first, _ = _counting_processor(rows)
    first.process([_call(0)])
    processor, family = _counting_processor(rows)
    loading = asyncio.ensure_future(processor.load([0]))
    await asyncio.sleep(0)
    processor.drop_partition(0)
    await loading
    assert processor.loaded == set() and family.cells.partitions == set()


async def test_a_background_load_decodes_one_store_at_a_time_and_loads_what_a_direct_load_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows: dict[str, bytes] = {}
    first, _ = _counting_processor(rows)
    first.process([_call(offset) for offset in range(3)])
    decoded_prefixes: list[set[str]] = []

    def recording(raw: dict[str, bytes]) -> dict[str, object]:
        decoded_prefixes.append({key.split("|")[1] for key in raw})
        return decode_rows(raw)

    direct, direct_family = _counting_processor(dict(rows))
    direct.ensure_loaded(0)
    monkeypatch.setattr(processor_module, "decode_rows", recording)
    processor, family = _counting_processor(dict(rows))
    await processor.load([0])

    assert decoded_prefixes == [{"dedup"}, {"activity"}]
    assert family.cells.loaded(0) == direct_family.cells.loaded(0)
    assert family.partition_wm == direct_family.partition_wm == {0: 2}
    assert processor.process([(0, 5, _call(1)[2])]).duplicates == 1  # the ids came back: a redelivery is one
