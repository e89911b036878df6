"""Lead response in Redis: ``merge_partials.lua`` sums per-partition partials and derives the rates,
the mean and the quantiles from the merged totals, exactly as Python's ``derived_fields`` does."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from salespulse.families.lead_response.rules import BUCKET_FIELDS, RESPONSE_BUCKETS
from salespulse.families.lead_response.spec import ADDITIVE_FIELDS, derived_fields, redis_derived_spec
from salespulse.outputs.aggregates import Partial
from salespulse.outputs.redis import RedisPublisher
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog

DERIVED = ("within_sla_rate", "contact_coverage", "avg_response_s", "p50_s", "p90_s", "p99_s")
NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
_keys = itertools.count()


def partial(partition: int, fields: Mapping[str, float], key: str, watermark: int = 1) -> Partial:
    return Partial(
        family="lead_response",
        redis_key=key,
        partition=partition,
        watermark=watermark,
        fields=dict(fields),
        ttl_s=0,
        topic_key=f"{key}:p{partition}",
        record={},
    )


def publisher(client: aioredis.Redis) -> RedisPublisher:
    return RedisPublisher(client, channel="", derived={"lead_response": redis_derived_spec()})


async def total(client: aioredis.Redis, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in (await client.hgetall(key)).items()}


def summed(*parts: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for fields in parts:
        for name, value in fields.items():
            out[name] = out.get(name, 0) + value
    return out


def assert_total_matches_python(got: Mapping[str, float], parts: list[Mapping[str, float]]) -> None:
    """Additive fields are the sums; derived fields are ``derived_fields`` of the sums, present iff defined."""
    merged = summed(*parts)
    expected = derived_fields(merged)
    assert set(got) == set(merged) | set(expected)
    for name, value in merged.items():
        assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-9), name
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-9), (name, got[name], value)


@st.composite
def lead_fields(draw: st.DrawFn) -> dict[str, float]:
    """One partition's additive fields of one scope id: consistent counts, sparse buckets."""
    buckets = {name: draw(st.sampled_from([0, 0, 0, 1, 2, 7, 40])) for name in BUCKET_FIELDS}
    touched = sum(buckets.values())
    within = draw(st.integers(0, touched))
    mean = draw(st.floats(0, RESPONSE_BUCKETS[-1], allow_nan=False))
    fields: dict[str, float] = {
        "created": touched + draw(st.integers(0, 60)),
        "touched": touched,
        "within_sla": within,
        "late": touched - within,
        "response_sum_s": mean * touched,
    }
    keep_zero = draw(st.booleans())  # a partial may carry zero fields (a lead that moved away) or omit them
    fields |= {name: n for name, n in buckets.items() if n or keep_zero}
    return {name: value for name, value in fields.items() if value or keep_zero}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p0=lead_fields(), p1=lead_fields())
@example(  # a large sum replaced beside a small fraction: a difference of floats would lose the fraction
    p0={"created": 41, "touched": 41, "late": 41, "response_sum_s": 1000031.0, "le_604800": 1, "le_inf": 40},
    p1={"created": 1, "touched": 1, "late": 1, "response_sum_s": 0.400390625, "le_inf": 1},
)
async def test_merged_total_has_summed_fields_and_derived_fields_equal_to_python(
    redis_client: aioredis.Redis, p0: dict[str, float], p1: dict[str, float]
) -> None:
    key = f"salespulse:lead_response:team:t{next(_keys)}:all"
    changed = await publisher(redis_client).publish([partial(0, p0, key), partial(1, p1, key)])
    assert changed == 1  # one total hash, rewritten for both partitions
    assert_total_matches_python(await total(redis_client, key), [p0, p1])
    # a newer partial of partition 0 replaces its contribution, and the derived fields follow
    await publisher(redis_client).publish([partial(0, p1, key, watermark=2)])
    assert_total_matches_python(await total(redis_client, key), [p1, p1])


async def test_derived_fields_are_absent_while_undefined(redis_client: aioredis.Redis) -> None:
    pub = publisher(redis_client)
    untouched = "salespulse:lead_response:rep:anna:all"
    await pub.publish([partial(0, {"created": 2}, untouched), partial(1, {"created": 1, "touched": 0}, untouched)])
    assert await total(redis_client, untouched) == {
        "created": 3, "touched": 0, "within_sla_rate": 0, "contact_coverage": 0,
    }
    moved_away = "salespulse:lead_response:rep:ben:all"  # a rep whose only lead was reassigned
    await pub.publish([partial(0, {"created": 0, "touched": 0, "le_300": 0}, moved_away)])
    assert await total(redis_client, moved_away) == {"created": 0, "touched": 0, "le_300": 0}
    touched = "salespulse:lead_response:rep:cleo:all"
    await pub.publish([partial(0, {"created": 1}, touched)])
    await pub.publish([partial(1, {"created": 1, "touched": 1, "within_sla": 1, "response_sum_s": 240, "le_300": 1}, touched)])
    got = await total(redis_client, touched)
    assert got["avg_response_s"] == pytest.approx(240) and got["p50_s"] == pytest.approx(180 + 120 * 0.5)
    assert got["contact_coverage"] == pytest.approx(0.5) and got["within_sla_rate"] == pytest.approx(0.5)


async def test_quantile_beyond_the_last_bound_reports_the_bound_as_python_does(redis_client: aioredis.Redis) -> None:
    key = "salespulse:lead_response:source:ads:all"
    fields = {"created": 3, "touched": 3, "late": 3, "response_sum_s": 3e6, "le_inf": 2, "le_86400": 1}
    await publisher(redis_client).publish([partial(4, fields, key)])
    got = await total(redis_client, key)
    assert got["p90_s"] == 604800 == derived_fields(fields)["p90_s"]
    assert_total_matches_python(got, [fields])


def family_over(table: dict[str, bytes]) -> tuple[LeadResponseFamily, BatchProcessor]:
    family = LeadResponseFamily(CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), ZoneInfo("UTC"), 35 * 86400.0,
                                sla_s=300)
    return family, BatchProcessor(DedupIndex(table, 3 * 86400.0), [family], lambda record, why: None)


def event(event_id: str, event_type: str, lead_id: str, at: float, **fields: Any) -> bytes:
    base = {"event_id": event_id, "type": event_type, "lead_id": lead_id,
            "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat()}
    return orjson.dumps(base | fields)


async def test_rendered_partials_of_two_partitions_merge_to_python_totals_and_derived_fields(
    redis_client: aioredis.Redis,
) -> None:
    family, processor = family_over({})
    t0 = NOW - 3600
    by_partition: dict[int, list[bytes]] = {0: [], 1: []}
    for i, response in enumerate([20, 200, 299, 301, 900, 5000, None, None, 45, 86400 * 9]):
        partition, lead_id = i % 2, f"L{i}"
        at = t0 - (86400 * 10 if response == 86400 * 9 else 0)
        by_partition[partition].append(event(f"c{i}", "lead.created", lead_id, at, rep_id="anna", team="north",
                                             source="ads"))
        if response is not None:
            by_partition[partition].append(event(f"t{i}", "call.logged", lead_id, at + response, rep_id="anna",
                                                 outcome="connected"))
    processor.process([(p, offset, raw) for p, raws in by_partition.items() for offset, raw in enumerate(raws)], NOW)
    partials = family.render({0, 1}, NOW)
    await RedisPublisher(redis_client, derived={"lead_response": redis_derived_spec()}).publish(partials)
    checked = 0
    for scope, ident in (("rep", "anna"), ("team", "north"), ("source", "ads")):
        for window in ("all", "rolling:24h", "rolling:30d", "day:2026-11-22", "month:2026-11"):
            parts = [p.fields for p in partials if p.record["scope"] == scope and p.record["id"] == ident
                     and p.record["window"] == window]
            assert len(parts) == 2, (scope, ident, window)
            got = await total(redis_client, f"salespulse:lead_response:{scope}:{ident}:{window}")
            assert_total_matches_python(got, parts)
            checked += 1
    assert checked == 15
    everything = await total(redis_client, "salespulse:lead_response:team:north:all")
    assert {k: everything[k] for k in ("created", "touched", "within_sla", "late")} == {
        "created": 10, "touched": 8, "within_sla": 4, "late": 4,
    }
    assert everything["contact_coverage"] == pytest.approx(0.8)
    assert set(everything) >= set(DERIVED) and not set(everything) - set(ADDITIVE_FIELDS) - set(DERIVED)
