"""Prometheus exposition: business families computed from table state at scrape time, plus own health.

Counters of business metrics are *absolute values from changelogged state*, not increments, so a
replay after a crash never inflates them. Each worker exports the partials of the partitions it owns;
dashboards aggregate with ``sum by``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from salespulse.streams.activity import ActivityFamily


class ActivityCollector(Collector):
    """``salespulse_activities_total{rep,team,kind,outcome}`` from the all-time cells of owned partitions."""

    def __init__(self, family: ActivityFamily, owned: Callable[[], Iterable[int]]) -> None:
        self.family = family
        self.owned = owned

    def collect(self) -> Iterator[CounterMetricFamily]:
        metric = CounterMetricFamily(
            "salespulse_activities",
            "Rep activities (calls, emails sent, meetings, logged activities) by rep, team, kind and outcome.",
            labels=["rep", "team", "kind", "outcome"],
        )
        for (rep, team, kind, outcome), value in sorted(self.family.counter_totals(self.owned()).items()):
            metric.add_metric([rep, team, kind, outcome], value)
        yield metric


class WorkerHealth:
    """The worker's own operational metrics (for consumer-side alerting), registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "salespulse_worker_events",
            "Records the worker consumed, by outcome (counted, duplicate, dead_letter).",
            ["outcome"],
            registry=registry,
        )
        self.publish_errors = Counter(
            "salespulse_publish_errors", "Failed publisher flushes, by sink.", ["sink"], registry=registry
        )
        self.flush_seconds = Histogram(
            "salespulse_flush_seconds",
            "Duration of one publisher flush (render, Redis, metric topics).",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.batch_events = Histogram(
            "salespulse_batch_events",
            "Records per worker batch.",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
