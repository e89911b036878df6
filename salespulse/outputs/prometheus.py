"""Prometheus exposition of the worker's own health and consumer lag.

The business series come from each family's spec (``outputs.series.SpecCollector``, built by
``WindowedFamily.collector``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class SkippedSeries:
    """``salespulse_metric_series_skipped_total{family}``: series left out of a scrape, one at a time, so that
    one bad value (an id written before control characters were refused, a bug) never fails ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.counter = None if registry is None else Counter(
            "salespulse_metric_series_skipped",
            "Series left out of a scrape because their state could not be rendered (see the worker log), by family.",
            ["family"],
            registry=registry,
        )
        self._logged: set[str] = set()

    def __call__(self, family: str, why: str) -> None:
        if self.counter is not None:
            self.counter.labels(family).inc()
        if family not in self._logged:  # once per family: ids may name people, and a scrape repeats them
            self._logged.add(family)
            log.warning("left a %s series out of /metrics: %s (counted in salespulse_metric_series_skipped_total)",
                        family, why)


class WorkerHealth:
    """The worker's own operational metrics (for consumer-side alerting), registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("salespulse_worker_events",
                              "Records the worker consumed, by outcome (counted, duplicate, dead_letter).",
                              ["outcome"], registry=registry)
        self.publish_errors = Counter(
            "salespulse_publish_errors", "Failed publisher flushes, by sink.", ["sink"], registry=registry
        )
        self.flush_seconds = Histogram("salespulse_flush_seconds",
                                       "Duration of one publisher flush (render, Redis, metric topics).",
                                       registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.alerts = Counter(
            "salespulse_alerts_published",
            "Alerts this worker published (salespulse.alerts and salespulse:alerts), by status, rule and team.",
            ["status", "alert", "team"],
            registry=registry,
        )
        self.batch_events = Histogram("salespulse_batch_events", "Records per worker batch.", registry=registry,
                                      buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
        self.skipped = SkippedSeries(registry)


class ConsumerLagCollector(Collector):
    """``salespulse_consumer_lag_records{topic,partition}`` and ``salespulse_worker_partitions_owned``.

    ``lag`` returns, for every partition of ``topic`` this worker owns, the records written but not yet
    processed (broker high watermark minus the worker's position), or None while the high watermark is not
    known yet (such a partition counts as owned but exports no lag). Dashboards and alerts take ``max by (partition)`` (two workers may briefly both report one
    partition while it moves) and ``sum`` over partitions.
    """

    def __init__(self, topic: str, lag: Callable[[], dict[int, int | None]]) -> None:
        self.topic = topic
        self.lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lags = self.lag()
        lag = GaugeMetricFamily(
            "salespulse_consumer_lag_records",
            "Records of an owned partition written to Kafka and not yet processed by this worker.",
            labels=["topic", "partition"],
        )
        for partition, records in sorted(lags.items()):
            if records is not None:
                lag.add_metric([self.topic, str(partition)], records)
        owned = GaugeMetricFamily(
            "salespulse_worker_partitions_owned", "Partitions of the events topic this worker owns and has loaded."
        )
        owned.add_metric([], len(lags))
        yield from (lag, owned)

