"""Prometheus exposition: business families computed from table state at scrape time, plus own health.

Counters of business metrics are *absolute values from changelogged state*, not increments, so a
replay after a crash never inflates them. Each worker exports the partials of the partitions it owns;
dashboards aggregate with ``sum by``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from salespulse.metrics.composite import MalformedId, split_id
from salespulse.metrics.lead_response import BUCKET_FIELDS, RESPONSE_BUCKETS
from salespulse.metrics.pipeline import DURATION_BUCKETS, bucket_fields
from salespulse.streams.activity import ActivityFamily
from salespulse.streams.engagement import EngagementFamily
from salespulse.streams.lead_response import LeadResponseFamily
from salespulse.streams.pipeline import PipelineFamily

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


class _GuardedCollector(Collector):
    """Collects ``_collect`` whole or not at all: a failure of one family is counted, the rest of a scrape stands."""

    family_name = ""

    def __init__(self, skipped: SkippedSeries | None) -> None:
        self.skipped = skipped or SkippedSeries()

    def collect(self) -> Iterator[Any]:
        try:
            metrics = list(self._collect())
        except Exception as exc:  # noqa: BLE001 - a bug in one family must not take the scrape down
            log.exception("collecting %s failed", self.family_name)
            self.skipped(self.family_name, f"collector error {type(exc).__name__}")
            return iter(())
        return iter(metrics)

    def _collect(self) -> Iterator[Any]:
        raise NotImplementedError

    def malformed(self, ident: str) -> None:
        self.skipped(self.family_name, "an id that does not decode (a control character in a label value?)")


class ActivityCollector(_GuardedCollector):
    """``salespulse_activities_total{rep,team,kind,outcome}`` from the all-time cells of owned partitions."""

    family_name = "activity"

    def __init__(
        self, family: ActivityFamily, owned: Callable[[], Iterable[int]], skipped: SkippedSeries | None = None
    ) -> None:
        super().__init__(skipped)
        self.family = family
        self.owned = owned

    def _collect(self) -> Iterator[CounterMetricFamily]:
        metric = CounterMetricFamily(
            "salespulse_activities",
            "Rep activities (calls, emails sent, meetings, logged activities) by rep, team, kind and outcome.",
            labels=["rep", "team", "kind", "outcome"],
        )
        for (rep, team, kind, outcome), value in sorted(self.family.counter_totals(self.owned(), self.malformed).items()):
            metric.add_metric([rep, team, kind, outcome], value)
        yield metric


class EmailEventsCollector(_GuardedCollector):
    """``salespulse_email_events_total{rep,team,event}``: sent emails engaged, each once per event kind."""

    family_name = "engagement"

    def __init__(
        self, family: EngagementFamily, owned: Callable[[], Iterable[int]], skipped: SkippedSeries | None = None
    ) -> None:
        super().__init__(skipped)
        self.family = family
        self.owned = owned

    def _collect(self) -> Iterator[CounterMetricFamily]:
        metric = CounterMetricFamily(
            "salespulse_email_events",
            "Sent emails opened, clicked, replied to or bounced (each email once per event), by sending rep and team.",
            labels=["rep", "team", "event"],
        )
        for (rep, team, event), value in sorted(self.family.email_event_totals(self.owned(), self.malformed).items()):
            metric.add_metric([rep, team, event], value)
        yield metric


class LeadResponseCollector(_GuardedCollector):
    """The contract's lead-response families from the state of owned partitions, at scrape time."""

    family_name = "lead_response"

    def __init__(
        self, family: LeadResponseFamily, owned: Callable[[], Iterable[int]], skipped: SkippedSeries | None = None
    ) -> None:
        super().__init__(skipped)
        self.family = family
        self.owned = owned

    def _collect(self) -> Iterator[Any]:
        owned = list(self.owned())
        now = time.time()
        created = CounterMetricFamily(
            "salespulse_leads_created", "Leads created, by team and source.", labels=["team", "source"]
        )
        response = HistogramMetricFamily(
            "salespulse_lead_response_seconds",
            "Time from lead creation to first outbound touch (business seconds), by team and source.",
            labels=["team", "source"],
        )
        within = CounterMetricFamily(
            "salespulse_lead_response_within_sla",
            "Leads first touched at or before their deadline (creation + SLA, in business time), by team and source.",
            labels=["team", "source"],
        )
        for team_source, fields in sorted(self.family.all_time(owned, "team_source").items()):
            try:
                team, source = split_id(team_source, 2)
            except MalformedId:
                self.malformed(team_source)
                continue
            created.add_metric([team, source], fields.get("created", 0))
            within.add_metric([team, source], fields.get("within_sla", 0))
            cumulative, buckets = 0.0, []
            for name, bound in zip(BUCKET_FIELDS, (*RESPONSE_BUCKETS, float("inf"))):
                cumulative += fields.get(name, 0)
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            response.add_metric([team, source], buckets, fields.get("response_sum_s", 0))
        awaiting = GaugeMetricFamily(
            "salespulse_leads_awaiting_response", "Live leads not yet touched, by team.", labels=["team"]
        )
        oldest = GaugeMetricFamily(
            "salespulse_oldest_awaiting_lead_age_seconds", "Age of the oldest live untouched lead, by team.", labels=["team"]
        )
        for team, (count, age) in sorted(self.family.awaiting_by_team(owned, now).items()):
            awaiting.add_metric([team], count)
            oldest.add_metric([team], age)
        breaches = CounterMetricFamily(
            "salespulse_lead_response_sla_breaches",
            "Leads whose first-touch deadline passed untouched, by team and responsible rep.",
            labels=["team", "rep"],
        )
        for (team, rep), count in sorted(self.family.breaches(owned, now, self.malformed).items()):
            breaches.add_metric([team, rep], count)
        sla = GaugeMetricFamily("salespulse_lead_response_sla_seconds", "The configured first-touch deadline.")
        sla.add_metric([], self.family.sla_s)
        yield from (created, within, response, awaiting, oldest, breaches, sla)


def _duration_buckets(fields: dict[str, float], prefix: str) -> list[tuple[str, float]]:
    cumulative, buckets = 0.0, []
    for name, bound in zip(bucket_fields(prefix), (*DURATION_BUCKETS, float("inf"))):
        cumulative += fields.get(name, 0)
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    return buckets


class PipelineCollector(_GuardedCollector):
    """The contract's stage, close, revenue and open-pipeline families from the state of owned partitions."""

    family_name = "pipeline"

    def __init__(
        self,
        family: PipelineFamily,
        owned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
        skipped: SkippedSeries | None = None,
    ) -> None:
        super().__init__(skipped)
        self.family = family
        self.owned = owned
        self.clock = clock

    def _split(self, ident: str, count: int, sep: str = "\t") -> tuple[str, ...] | None:
        try:
            return split_id(ident, count, sep)
        except MalformedId:
            self.malformed(ident)
            return None

    def _collect(self) -> Iterator[Any]:
        owned = list(self.owned())
        family = self.family
        entries = CounterMetricFamily(
            "salespulse_stage_entries", "Deals entering a stage, by pipeline and stage.", labels=["pipeline", "stage"]
        )
        reasons = CounterMetricFamily(
            "salespulse_deals_lost_reasons",
            "Lost deals by pipeline and loss reason (normalised; unknown reasons are 'other').",
            labels=["pipeline", "reason"],
        )
        cycle = HistogramMetricFamily(
            "salespulse_sales_cycle_seconds", "Deal creation to win, by pipeline.", labels=["pipeline"]
        )
        for pipeline, fields in sorted(family.all_time(owned, "pipeline").items()):
            for name, value in sorted(fields.items()):
                if name.startswith("entries:") and value:
                    entries.add_metric([pipeline, name[len("entries:"):]], value)
                elif name.startswith("lost_reason:") and value:
                    reasons.add_metric([pipeline, name[len("lost_reason:"):]], value)
            if fields.get("cycle_count"):
                cycle.add_metric([pipeline], _duration_buckets(fields, "cycle"), fields.get("cycle_sum_s", 0))
        transitions = CounterMetricFamily(
            "salespulse_stage_transitions",
            "Stage changes by pipeline, from and to stage, and direction in the configured stage order.",
            labels=["pipeline", "from_stage", "to_stage", "direction"],
        )
        for ident, fields in sorted(family.all_time(owned, "transition").items()):
            parts = self._split(ident, 3)
            if parts is not None and fields.get("n"):
                pipeline, from_stage, to_stage = parts
                direction = family.pipelines.direction(pipeline, from_stage, to_stage)
                transitions.add_metric([pipeline, from_stage, to_stage, direction], fields["n"])
        time_in_stage = HistogramMetricFamily(
            "salespulse_time_in_stage_seconds", "Time a deal spent in a stage before leaving it.", labels=["pipeline", "stage"]
        )
        for ident, fields in sorted(family.all_time(owned, "stage").items()):
            parts = self._split(ident, 2, "/")
            if parts is not None and fields.get("tis_count"):
                pipeline, stage = parts
                time_in_stage.add_metric([pipeline, stage], _duration_buckets(fields, "tis"), fields.get("tis_sum_s", 0))
        closed = CounterMetricFamily(
            "salespulse_deals_closed", "Deals closed, by pipeline, outcome (won/lost) and rep.",
            labels=["pipeline", "outcome", "rep"],
        )
        revenue = CounterMetricFamily(
            "salespulse_revenue_won", "Amount of won deals, by pipeline, rep and currency.",
            labels=["pipeline", "rep", "currency"],
        )
        for ident, fields in sorted(family.all_time(owned, "pipeline_rep").items()):
            parts = self._split(ident, 2)
            if parts is None:
                continue
            pipeline, rep = parts
            for outcome in ("won", "lost"):
                if fields.get(outcome):
                    closed.add_metric([pipeline, outcome, rep], fields[outcome])
            for name, value in sorted(fields.items()):
                if name.startswith("won_amount:") and fields.get("won"):
                    revenue.add_metric([pipeline, rep, name[len("won_amount:"):]], value)
        open_deals = GaugeMetricFamily("salespulse_open_deals", "Open deals now, by pipeline and stage.",
                                       labels=["pipeline", "stage"])
        open_amount = GaugeMetricFamily(
            "salespulse_open_pipeline_amount", "Amount of open deals now, by pipeline, stage and currency.",
            labels=["pipeline", "stage", "currency"],
        )
        weighted = GaugeMetricFamily(
            "salespulse_weighted_pipeline_amount",
            "Forecast now: sum of open amount x probability (else the stage default), by pipeline and currency.",
            labels=["pipeline", "currency"],
        )
        deals_by_stage: dict[tuple[str, str], float] = {}
        weighted_by: dict[tuple[str, str], float] = {}
        for ident, fields in sorted(family.open_totals(owned, "gauge").items()):
            parts = self._split(ident, 3)
            if parts is None:
                continue
            pipeline, stage, currency = parts
            deals_by_stage[(pipeline, stage)] = deals_by_stage.get((pipeline, stage), 0) + fields.get("deals", 0)
            weighted_by[(pipeline, currency)] = weighted_by.get((pipeline, currency), 0) + fields.get("weighted", 0)
            open_amount.add_metric([pipeline, stage, currency], fields.get("amount", 0))
        for (pipeline, stage), count in sorted(deals_by_stage.items()):
            open_deals.add_metric([pipeline, stage], count)
        for (pipeline, currency), value in sorted(weighted_by.items()):
            weighted.add_metric([pipeline, currency], value)
        quotas = GaugeMetricFamily(
            "salespulse_quota_amount", "Quota per rep and period (YYYY-MM), from quota.set and the config.",
            labels=["rep", "period", "currency"],
        )
        for (rep, period, currency), amount in sorted(family.quotas(owned).items()):
            quotas.add_metric([rep, period, currency], amount)
        yield from (entries, transitions, time_in_stage, closed, revenue, cycle, reasons, open_deals, open_amount,
                    weighted, quotas, *self._this_month(owned))

    def _this_month(self, owned: list[int]) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        """Won amount and quota per rep in the calendar month of now (SALESPULSE_TIMEZONE), for attainment.

        A rep's quota lives in the rep's partition and the rep's won deals in many deal partitions, so no
        worker can divide them: the won amount is a partial (``sum by (rep)`` over workers), the quota is whole
        where it is exported (``max by (rep)``); attainment is the first over the second.
        """
        won = GaugeMetricFamily(
            "salespulse_month_revenue_won_amount",
            "Amount won this calendar month by the deal owner, by rep and currency (a partial: sum by rep).",
            labels=["rep", "currency"],
        )
        quota = GaugeMetricFamily(
            "salespulse_month_quota_amount",
            "The rep's quota for this calendar month, by rep and currency (max by rep).",
            labels=["rep", "currency"],
        )
        for rep, fields in sorted(self.family.current_window(owned, "rep", "month", self.clock()).items()):
            for name, value in sorted(fields.items()):
                kind, _, currency = name.partition(":")
                if kind == "won_amount" and fields.get("won"):
                    won.add_metric([rep, currency], value)
                elif kind == "quota" and value:
                    quota.add_metric([rep, currency], value)
        return won, quota


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
        self.alerts = Counter(
            "salespulse_alerts_published", "SLA alerts published by this worker, by status.", ["status"], registry=registry
        )
        self.batch_events = Histogram(
            "salespulse_batch_events",
            "Records per worker batch.",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
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

