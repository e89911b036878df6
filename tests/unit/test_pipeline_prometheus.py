"""The pipeline family's Prometheus families for revenue against quota: this month's won amount and quota per rep.

No worker can compute a rep's attainment (the quota lives in the rep's partition, the won deals in many deal
partitions), so each exports ``salespulse_month_revenue_won_amount`` (a partial, summed by rep over workers)
and ``salespulse_month_quota_amount`` (whole where the rep's partition is, max by rep); the board divides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from salespulse.families.keys import decode, encode
from salespulse.outputs.prometheus import SkippedSeries
from tests.unit.test_pipeline import (
    DAY,
    NOW,
    PARTITIONS,
    Cluster,
    Worker,
    created,
    lost,
    moved,
    partition_of,
    quota,
    won,
)

WON = "salespulse_month_revenue_won_amount"
QUOTA = "salespulse_month_quota_amount"


def scrape(cluster: Cluster, owned: Iterable[int], now: float = NOW) -> dict[tuple[str, str, str], float]:
    """(family, rep, currency) -> value of the month gauges a worker owning ``owned`` exports at ``now``."""
    registry = CollectorRegistry()
    partitions = list(owned)
    registry.register(cluster.family.collector(lambda: partitions, clock=lambda: now))
    return {
        (metric.name, sample.labels["rep"], sample.labels["currency"]): sample.value
        for metric in registry.collect()
        if metric.name in (WON, QUOTA)
        for sample in metric.samples
    }


def test_month_gauges_carry_this_months_wins_and_quota_per_rep_and_nothing_of_other_months() -> None:
    cluster = Cluster()
    cluster.send([
        quota("anna", "2026-11", 100_000), quota("anna", "2026-10", 80_000, at=NOW - 40 * DAY),
        quota("ben", "2026-11", 50_000),
        created("D1", NOW - 5 * DAY), won("D1", NOW - 2 * DAY, amount=30_000),
        created("D2", NOW - 5 * DAY), won("D2", NOW - DAY, amount=15_000),
        created("D3", NOW - 40 * DAY), won("D3", NOW - 30 * DAY, amount=99_000),  # October
        created("D4", NOW - 5 * DAY, rep="cleo"), lost("D4", NOW - DAY),
        created("D5", NOW - 5 * DAY, rep="cleo"), moved("D5", NOW - DAY, "proposal"),  # still open
    ])
    cluster.drain()
    assert scrape(cluster, range(PARTITIONS)) == {
        (WON, "anna", "USD"): 45_000,
        (QUOTA, "anna", "USD"): 100_000,
        (QUOTA, "ben", "USD"): 50_000,  # no win yet: the board counts ben at 0 % of quota
    }
    december = datetime(2026, 12, 1, 12, tzinfo=timezone.utc).timestamp()
    assert scrape(cluster, range(PARTITIONS), now=december) == {}  # a new month starts from nothing


def test_workers_export_partials_whose_sum_is_the_won_amount_and_whose_max_is_the_quota() -> None:
    cluster = Cluster()
    deals = [f"D{i}" for i in range(12)]
    events = [quota("anna", "2026-11", 100_000)]
    for i, deal in enumerate(deals):
        events += [created(deal, NOW - 3 * DAY), won(deal, NOW - DAY, amount=1_000 * (i + 1))]
    cluster.send(events)
    cluster.drain()
    assert len({partition_of(d) for d in deals}) > 1  # the wins really are spread over partitions
    whole = scrape(cluster, range(PARTITIONS))
    assert whole[(WON, "anna", "USD")] == 78_000
    workers = [scrape(cluster, [p]) for p in range(PARTITIONS)]
    assert sum(w.get((WON, "anna", "USD"), 0) for w in workers) == 78_000
    quotas = [w[(QUOTA, "anna", "USD")] for w in workers if (QUOTA, "anna", "USD") in w]
    assert quotas == [100_000]  # only the worker owning anna's partition knows her quota
    assert sum(w.get((WON, "anna", "USD"), 0) for w in workers) / max(quotas) == 0.78


def test_a_reopened_win_leaves_the_months_revenue() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY), won("D1", NOW - 2 * DAY, amount=10_000),
                  moved("D1", NOW - DAY, "negotiation", frm="closed_won")])
    cluster.drain()
    assert (WON, "anna", "USD") not in scrape(cluster, range(PARTITIONS))


def test_the_month_is_the_calendar_month_of_the_configured_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    late_on_the_30th = datetime(2026, 11, 30, 23, 30, tzinfo=timezone.utc).timestamp()  # 1 December in Berlin
    cluster = Cluster(tz=berlin)
    cluster.send([quota("anna", "2026-12", 60_000, at=NOW), created("D1", NOW), won("D1", late_on_the_30th, 5_000)])
    cluster.drain(now=late_on_the_30th + 60)
    assert scrape(cluster, range(PARTITIONS), now=late_on_the_30th + 60) == {
        (WON, "anna", "USD"): 5_000,
        (QUOTA, "anna", "USD"): 60_000,
    }
    in_utc = Cluster()
    in_utc.send([quota("anna", "2026-12", 60_000, at=NOW), created("D1", NOW), won("D1", late_on_the_30th, 5_000)])
    in_utc.drain(now=late_on_the_30th + 60)
    assert scrape(in_utc, range(PARTITIONS), now=late_on_the_30th + 60) == {(WON, "anna", "USD"): 5_000}


def test_transitions_outside_the_configured_order_are_exported_with_direction_unknown() -> None:
    cluster = Cluster()
    cluster.send([
        created("D1", NOW - 3 * DAY, stage="meeting"), moved("D1", NOW - 2 * DAY, "proposal"),
        moved("D1", NOW - DAY, "security_review"),
    ])
    cluster.drain()
    registry = CollectorRegistry()
    registry.register(cluster.family.collector(lambda: list(range(PARTITIONS)), clock=lambda: NOW))
    directions = {
        (s.labels["from_stage"], s.labels["to_stage"]): s.labels["direction"]
        for metric in registry.collect() if metric.name == "salespulse_stage_transitions"
        for s in metric.samples if s.name.endswith("_total")
    }
    assert directions == {("meeting", "proposal"): "forward", ("proposal", "security_review"): "unknown"}


# --- a poisoned label value in existing state (issue 11, finding 1) ----------------------------------------------


def _restart_with_poisoned_state(cluster: Cluster, marker: str, value: str) -> Worker:
    """A worker recovering a table whose ids hold ``value`` (a tab, a newline: written before they were refused)
    where ``marker`` was: the state an earlier version left in the changelog."""
    escaped = orjson.dumps(value)[1:-1]  # as JSON keeps it inside a string
    # A deal state is kept as its JSON text inside its record: escaped once more there.
    twice = orjson.dumps(escaped.decode())[1:-1]
    table = {
        key: raw.replace(marker.encode(), twice if "|pstate|" in key else escaped)
        for key, raw in cluster.worker.table.items()
    }
    worker = Worker(table)
    for partition in range(PARTITIONS):
        worker.processor.ensure_loaded(partition)
    return worker


@pytest.mark.parametrize("value", ["new\tlead", "new\nlead", "new\x00lead"])
def test_a_control_character_in_a_stage_of_existing_state_costs_its_series_not_the_scrape(value: str) -> None:
    cluster = Cluster()
    cluster.send([
        created("D1", NOW - 5 * DAY, stage="newXlead"), moved("D1", NOW - 3 * DAY, "proposal"),
        created("D2", NOW - 4 * DAY, stage="newXlead"),  # still open in the poisoned stage
        created("D3", NOW - 5 * DAY), won("D3", NOW - DAY, amount=30_000),
    ])
    cluster.drain()
    worker = _restart_with_poisoned_state(cluster, "newXlead", value)
    registry = CollectorRegistry()
    skipped = SkippedSeries(registry)
    registry.register(worker.family.collector(lambda: range(PARTITIONS), clock=lambda: NOW, skipped=skipped))

    text = generate_latest(registry).decode()

    assert 'salespulse_deals_closed_total{outcome="won",pipeline="sales",rep="anna"} 1.0' in text
    assert 'salespulse_revenue_won_total{currency="USD",pipeline="sales",rep="anna"} 30000.0' in text
    assert registry.get_sample_value("salespulse_metric_series_skipped_total", {"family": "pipeline"}) >= 1


def test_composite_ids_of_any_values_never_collide_and_decode_back() -> None:
    tricky = ["a", "a\tb", "a\\", "\\t", "b/c", "a/", "", "\\", "x\\\\t"]
    ids: dict[str, tuple[str, ...]] = {}
    for sep in ("\t", "/"):
        for first in tricky:
            for second in tricky:
                ident = encode((first, second), sep)
                assert ids.setdefault(f"{sep}{ident}", (first, second)) == (first, second)
                if not any(c in first + second for c in "\t"):
                    assert decode(ident, 2, sep) == (first, second)
