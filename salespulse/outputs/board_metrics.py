"""Prometheus series the Grafana board joins with (docs/outputs.md), an extension of the contract's families.

- ``salespulse_rep_info{rep, display_name, team}`` 1: the reps the config names (``[rep_names]``,
  ``[teams]``, ``[targets.reps]``), with the display name the config declares (else the rep id) and
  the directory's team (else empty). The only personal data is what the config calls a display name.
- ``salespulse_pipeline_stage_order{pipeline, stage}``: a stage's position (1, 2, ...) in the
  configured order (open stages, then won, then lost), so a board can sort a funnel by it.
- ``salespulse_today_activities{rep, kind}``: activities of the current day (``SALESPULSE_TIMEZONE``)
  per rep and kind, from the day windows of owned partitions (a partial: ``sum by (rep, kind)``).
- ``salespulse_activity_day_target{rep, kind}``: the rep's configured daily target per kind (whole:
  ``max by (rep, kind)``), for reps the config names and reps active today.
- ``salespulse_team_open_deals{pipeline, stage, team}``, ``salespulse_team_open_pipeline_amount{pipeline,
  stage, currency, team}``, ``salespulse_team_weighted_pipeline_amount{pipeline, currency, team}``: the
  contract's open-pipeline gauges split by the deal's team, so the board's team filter applies to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from salespulse.config import Config

Key = tuple[str, ...]


class DayTotals(Protocol):
    """A family's fields per id of one scope in the calendar window holding ``now`` (``WindowQueries``)."""

    def current_window(self, owned: Iterable[int], scope: str, grain: str, now: float) -> Mapping[str, Mapping[str, float]]:
        ...


class OpenTotals(Protocol):
    """The open pipeline now per structured id of one scope (``PipelineFamily.open_totals_keyed``)."""

    def open_totals_keyed(
        self, owned: Iterable[int], scope: str, malformed: Callable[[str], None]
    ) -> Mapping[Key, Mapping[str, float]]:
        ...


class BoardInfoCollector(Collector):
    """Rep names and teams, stage order, and today's activity against the daily targets."""

    def __init__(
        self,
        config: Config,
        activity: DayTotals | None,
        pipeline: OpenTotals | None,
        owned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.activity = activity
        self.pipeline = pipeline
        self.owned = owned
        self.clock = clock
        self.reps = sorted(set(config.rep_names) | set(config.team_of_rep) | set(config.targets.reps))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "salespulse_rep_info", "Reps the config names: display name and team (value 1).",
            labels=["rep", "display_name", "team"],
        )
        for rep in self.reps:
            info.add_metric([rep, self.config.rep_names.get(rep, rep), self.config.team_of_rep.get(rep, "")], 1)
        order = GaugeMetricFamily(
            "salespulse_pipeline_stage_order", "A stage's position in its pipeline's configured order (1 = first).",
            labels=["pipeline", "stage"],
        )
        for pipeline, spec in sorted(self.config.pipeline_specs().specs.items()):
            for position, stage in enumerate(spec.order, start=1):
                order.add_metric([pipeline, stage], position)
        yield from (info, order)
        if self.pipeline is not None:
            yield from self._team_open_pipeline()
        if self.activity is None:
            return
        today = GaugeMetricFamily(
            "salespulse_today_activities", "Activities today per rep and kind (a partial: sum by rep, kind).",
            labels=["rep", "kind"],
        )
        active = self.activity.current_window(list(self.owned()), "rep", "day", self.clock())
        for rep, fields in sorted(active.items()):
            for kind, value in sorted(fields.items()):
                if ":" not in kind and value:
                    today.add_metric([rep, kind], value)
        targets = GaugeMetricFamily(
            "salespulse_activity_day_target", "The rep's configured daily activity target per kind (max by rep, kind).",
            labels=["rep", "kind"],
        )
        if self.config.targets.configured:
            for rep in sorted(set(self.reps) | set(active)):
                for kind, target in sorted(self.config.targets_for(rep, "day").items()):
                    targets.add_metric([rep, kind], target)
        yield from (today, targets)

    def _team_open_pipeline(self) -> Iterator[GaugeMetricFamily]:
        assert self.pipeline is not None
        deals = GaugeMetricFamily("salespulse_team_open_deals", "Open deals now, by pipeline, stage and team.",
                                  labels=["pipeline", "stage", "team"])
        amount = GaugeMetricFamily(
            "salespulse_team_open_pipeline_amount", "Amount of open deals now, by pipeline, stage, currency and team.",
            labels=["pipeline", "stage", "currency", "team"],
        )
        weighted = GaugeMetricFamily(
            "salespulse_team_weighted_pipeline_amount", "Forecast now (amount x probability), by pipeline, currency "
            "and team.", labels=["pipeline", "currency", "team"],
        )
        deals_by: dict[tuple[str, str, str], float] = {}
        weighted_by: dict[tuple[str, str, str], float] = {}
        for (pipeline, stage, currency, team), fields in sorted(
            self.pipeline.open_totals_keyed(list(self.owned()), "team_gauge", lambda ident: None).items()
        ):
            deals_by[(pipeline, stage, team)] = deals_by.get((pipeline, stage, team), 0.0) + fields.get("deals", 0.0)
            weighted_by[(pipeline, currency, team)] = (
                weighted_by.get((pipeline, currency, team), 0.0) + fields.get("weighted", 0.0)
            )
            amount.add_metric([pipeline, stage, currency, team], fields.get("amount", 0.0))
        for (pipeline, stage, team), count in sorted(deals_by.items()):
            deals.add_metric([pipeline, stage, team], count)
        for (pipeline, currency, team), value in sorted(weighted_by.items()):
            weighted.add_metric([pipeline, currency, team], value)
        yield from (deals, amount, weighted)
