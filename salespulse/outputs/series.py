"""Prometheus series declared once, in a family's spec, and read by one generic collector.

A family's all-time scopes hold additive fields per structured id (a tuple such as ``(team, source)``).
A ``Series`` says which fields of which scope become which samples: the id's parts are the first
labels, the field name gives the rest (``fields``), so no collector parses ids or field names of its
own. Values are *absolute values from changelogged state*, never increments, so a replay after a crash
never inflates a counter; each worker exports the partitions it owns and dashboards ``sum by``.
What no scope holds (waiting leads, open deals now, quotas) a ``LiveSeries`` declares too: its
``values`` function reads the family's state and returns label values -> value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from salespulse.outputs.derived import Histogram, Number

log = logging.getLogger(__name__)
Key = tuple[str, ...]
#: (owned partitions, scope, what to do with an id that does not decode) -> additive fields per structured id,
#: summed over those partitions.
Totals = Callable[[Iterable[int], str, Callable[[str], None]], Mapping[Key, Mapping[str, Number]]]
#: A field name -> the label values it adds, or None when the field is not part of the series.
FieldLabels = Callable[[str], Key | None]
#: (owned partitions, now, what to do with an id that does not decode) -> metric families no scope holds.
Live = Callable[[list[int], float, Callable[[str], None]], Iterable[Metric]]


def field_is(name: str) -> FieldLabels:
    """Exactly one field, adding no label."""
    return lambda field: () if field == name else None


def prefixed(prefix: str) -> FieldLabels:
    """Every field ``<prefix><rest>``, adding ``rest`` as the last label."""
    return lambda field: (field[len(prefix):],) if field.startswith(prefix) else None


def one_of(mapping: Mapping[str, Key]) -> FieldLabels:
    """The listed fields, each adding its own label values."""
    return mapping.get


@dataclass(frozen=True)
class HistogramSeries:
    """A histogram of one all-time scope from its bucket counts (``histogram``) and its ``sum_field``."""

    #: The metric family's name and HELP text, as Prometheus shows them.
    name: str
    help: str
    #: The all-time scope read, its id parts the labels.
    scope: str
    labels: Key
    histogram: Histogram
    #: The field holding the sum of the observed values (``response_sum_s`` ...).
    sum_field: str
    #: Only ids whose fields have this one non-zero (a histogram with observations).
    when: str | None = None


@dataclass(frozen=True)
class Series:
    """A counter or gauge of one all-time scope: labels = id parts + what ``fields`` adds (``arrange`` reorders)."""

    name: str
    help: str
    kind: Literal["counter", "gauge"]
    scope: str
    labels: Key
    fields: FieldLabels
    #: Only ids whose fields have this one non-zero (e.g. revenue of ids with a won deal).
    when: str | None = None
    skip_zero: bool = True
    arrange: Callable[[Key, Key], Key] | None = None
    #: Fields exported as 0 for an id that lacks them (a counter every id has, like leads created).
    fill: tuple[str, ...] = ()


AnySeries = Series | HistogramSeries
Family = TypeVar("Family")
#: (the family, owned partitions, now, what to do with an id that does not decode) -> label values -> value.
LiveValues = Callable[[Family, list[int], float, Callable[[str], None]], Mapping[Key, Number]]


@dataclass(frozen=True)
class LiveSeries(Generic[Family]):
    """A counter or gauge of what no scope holds, read from the family's state by ``values``; samples in
    label order, zeros kept (an open stage with no amount is a sample of 0)."""

    name: str
    help: str
    kind: Literal["counter", "gauge"]
    labels: Key
    values: LiveValues[Family]

    def render(self, family: Family, owned: list[int], now: float, malformed: Callable[[str], None]) -> Metric:
        metric: Metric
        if self.kind == "counter":
            metric = CounterMetricFamily(self.name, self.help, labels=list(self.labels))
        else:
            metric = GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
        for labels, value in sorted(self.values(family, owned, now, malformed).items()):
            metric.add_metric(list(labels), value)
        return metric


def render_live(series: Sequence[LiveSeries[Any]], family: object) -> Live:
    """The ``live`` of a ``SpecCollector``: every live series of a family, in declaration order."""

    def live(owned: list[int], now: float, malformed: Callable[[str], None]) -> Iterator[Metric]:
        for one in series:
            yield one.render(family, owned, now, malformed)

    return live


def _counter_or_gauge(series: Series, totals: Mapping[Key, Mapping[str, Number]]) -> Metric:
    metric: Metric
    if series.kind == "counter":
        metric = CounterMetricFamily(series.name, series.help, labels=list(series.labels))
    else:
        metric = GaugeMetricFamily(series.name, series.help, labels=list(series.labels))
    samples: dict[Key, float] = {}
    for ident, fields in totals.items():
        if series.when is not None and not fields.get(series.when):
            continue
        if series.fill:
            fields = {**dict.fromkeys(series.fill, 0), **fields}
        for field, value in fields.items():
            extra = series.fields(field)
            if extra is None or (series.skip_zero and not value):
                continue
            labels = series.arrange(ident, extra) if series.arrange is not None else (*ident, *extra)
            samples[labels] = samples.get(labels, 0.0) + value
    for labels, value in sorted(samples.items()):
        metric.add_metric(list(labels), value)
    return metric


def _histogram(series: HistogramSeries, totals: Mapping[Key, Mapping[str, Number]]) -> Metric:
    metric = HistogramMetricFamily(series.name, series.help, labels=list(series.labels))
    bounds = (*series.histogram.bounds, float("inf"))
    for ident, fields in sorted(totals.items()):
        if series.when is not None and not fields.get(series.when):
            continue
        cumulative, buckets = 0.0, []
        for name, bound in zip(series.histogram.fields, bounds):
            cumulative += fields.get(name, 0)
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        metric.add_metric(list(ident), buckets, fields.get(series.sum_field, 0))
    return metric


def render_series(series: AnySeries, totals: Mapping[Key, Mapping[str, Number]]) -> Metric:
    """One metric family from the totals of its scope."""
    if isinstance(series, HistogramSeries):
        return _histogram(series, totals)
    return _counter_or_gauge(series, totals)


@dataclass(eq=False)  # registered by identity (a registry keys its collectors)
class SpecCollector(Collector):
    """A family's Prometheus series, read from the state of the partitions ``owned()`` returns at scrape time.

    Collected whole or not at all: a failure is passed to ``skipped`` (family, why) and the rest of the scrape
    stands; an id that does not decode leaves out its one series (also passed to ``skipped``).
    """

    family: str
    series: Sequence[AnySeries]
    totals: Totals
    owned: Callable[[], Iterable[int]]
    live: Live | None = None
    clock: Callable[[], float] = time.time
    #: Called with (family, why) for each series or family left out of a scrape.
    skipped: Callable[[str, str], None] | None = None

    def _skip(self, why: str) -> None:
        if self.skipped is not None:
            self.skipped(self.family, why)

    def _malformed(self, ident: str) -> None:
        self._skip("an id that does not decode (a control character in a label value?)")

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self._collect())
        except Exception as exc:  # noqa: BLE001 - a bug in one family must not take the scrape down
            log.exception("collecting %s failed", self.family)
            self._skip(f"collector error {type(exc).__name__}")
            return iter(())
        return iter(metrics)

    def _collect(self) -> Iterator[Metric]:
        owned = list(self.owned())
        by_scope: dict[str, Mapping[Key, Mapping[str, Number]]] = {}
        for series in self.series:
            if series.scope not in by_scope:
                by_scope[series.scope] = self.totals(owned, series.scope, self._malformed)
            yield render_series(series, by_scope[series.scope])
        if self.live is not None:
            yield from self.live(owned, self.clock(), self._malformed)
