"""Prometheus exposition: business families computed from table state at scrape time, plus own health.

Counters of business metrics are *absolute values from changelogged state*, not increments, so a
replay after a crash never inflates them. Each worker exports the partials of the partitions it owns;
dashboards aggregate with ``sum by``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from salespulse.metrics.lead_response import BUCKET_FIELDS, RESPONSE_BUCKETS
from salespulse.streams.activity import ActivityFamily
from salespulse.streams.engagement import EngagementFamily
from salespulse.streams.lead_response import LeadResponseFamily


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


class EmailEventsCollector(Collector):
    """``salespulse_email_events_total{rep,team,event}``: sent emails engaged, each once per event kind."""

    def __init__(self, family: EngagementFamily, owned: Callable[[], Iterable[int]]) -> None:
        self.family = family
        self.owned = owned

    def collect(self) -> Iterator[CounterMetricFamily]:
        metric = CounterMetricFamily(
            "salespulse_email_events",
            "Sent emails opened, clicked, replied to or bounced (each email once per event), by sending rep and team.",
            labels=["rep", "team", "event"],
        )
        for (rep, team, event), value in sorted(self.family.email_event_totals(self.owned()).items()):
            metric.add_metric([rep, team, event], value)
        yield metric


class LeadResponseCollector(Collector):
    """The contract's lead-response families from the state of owned partitions, at scrape time."""

    def __init__(self, family: LeadResponseFamily, owned: Callable[[], Iterable[int]]) -> None:
        self.family = family
        self.owned = owned

    def collect(self) -> Iterator[Any]:
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
        for team_source, fields in sorted(self.family.all_time(owned, "team_source").items()):
            team, _, source = team_source.partition("\t")
            created.add_metric([team, source], fields.get("created", 0))
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
        for (team, rep), count in sorted(self.family.breaches(owned, now).items()):
            breaches.add_metric([team, rep], count)
        sla = GaugeMetricFamily("salespulse_lead_response_sla_seconds", "The configured first-touch deadline.")
        sla.add_metric([], self.family.sla_s)
        yield from (created, response, awaiting, oldest, breaches, sla)


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
