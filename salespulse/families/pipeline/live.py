"""The pipeline's Prometheus series that its spec cannot declare: they need the configured stage order,
the open deals *now* (not a window) or the quota states."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from salespulse.families.pipeline.family import PipelineFamily


def live_series(family: PipelineFamily, owned: list[int], now: float, malformed: Callable[[str], None]) -> Iterator[Metric]:
    """Transitions with their direction, open pipeline now, quotas, and this month's won amount and quota."""
    transitions = CounterMetricFamily(
        "salespulse_stage_transitions",
        "Stage changes by pipeline, from and to stage, and direction in the configured stage order.",
        labels=["pipeline", "from_stage", "to_stage", "direction"],
    )
    for (pipeline, from_stage, to_stage), fields in sorted(family.all_time_keyed(owned, "transition", malformed).items()):
        if fields.get("n"):
            direction = family.pipelines.direction(pipeline, from_stage, to_stage)
            transitions.add_metric([pipeline, from_stage, to_stage, direction], fields["n"])
    yield transitions
    yield from _open_pipeline(family, owned, malformed)
    quotas = GaugeMetricFamily(
        "salespulse_quota_amount", "Quota per rep and period (YYYY-MM), from quota.set and the config.",
        labels=["rep", "period", "currency"],
    )
    for (rep, period, currency), amount in sorted(family.quotas(owned).items()):
        quotas.add_metric([rep, period, currency], amount)
    yield quotas
    yield from _this_month(family, owned, now)


def _open_pipeline(family: PipelineFamily, owned: list[int], malformed: Callable[[str], None]) -> Iterator[Metric]:
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
    for (pipeline, stage, currency), fields in sorted(family.open_totals_keyed(owned, "gauge", malformed).items()):
        deals_by_stage[(pipeline, stage)] = deals_by_stage.get((pipeline, stage), 0) + fields.get("deals", 0)
        weighted_by[(pipeline, currency)] = weighted_by.get((pipeline, currency), 0) + fields.get("weighted", 0)
        open_amount.add_metric([pipeline, stage, currency], fields.get("amount", 0))
    for (pipeline, stage), count in sorted(deals_by_stage.items()):
        open_deals.add_metric([pipeline, stage], count)
    for (pipeline, currency), value in sorted(weighted_by.items()):
        weighted.add_metric([pipeline, currency], value)
    yield from (open_deals, open_amount, weighted)


def _this_month(family: PipelineFamily, owned: list[int], now: float) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
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
    for rep, fields in sorted(family.current_window(owned, "rep", "month", now).items()):
        for name, value in sorted(fields.items()):
            kind, _, currency = name.partition(":")
            if kind == "won_amount" and fields.get("won"):
                won.add_metric([rep, currency], value)
            elif kind == "quota" and value:
                quota.add_metric([rep, currency], value)
    return won, quota
