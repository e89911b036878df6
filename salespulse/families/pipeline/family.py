"""The pipeline family in the stream: deal, lead and quota states; stage, close, revenue and cohort aggregates.

Two stores, written in this order every batch (aggregates before the states they were derived from, so
a crash never keeps a new state while losing the aggregate change it caused): ``pipeline`` cells
(``WindowedFamily``: additive fields per rep, team, source, pipeline and stage, in the window of each
fact's own time) and the entity states in a ``RecordLog`` (one changelog record per batch): deals under
``d:<deal_id>`` (deal partitions), leads under ``l:<lead_id>`` (lead partitions) and quotas under
``q:<rep>:<YYYY-MM>`` (the rep's partition). Every state change is applied to the windows as
``contribution(new) - contribution(old)`` (``salespulse.metrics.pipeline``), so a late or redelivered
event never rewinds a stage or counts twice.

Open deals are also counted *now* (open pipeline and weighted pipeline per pipeline, stage, rep, team):
kept in memory per partition, rebuilt from the deal states when a partition is loaded, and published
as per-partition partials of ``salespulse:pipeline:open:<scope>:<id>``.

Cross-partition links (follow-up events, written to ``salespulse.events`` before the state is persisted):
``lead.converted`` → ``deal.lead_linked`` (``link:<deal>:<lead>``) to the deal's partition; a deal whose
lead is known from ``deal.created`` → ``lead.converted`` (``convert:<deal>:<lead>``) to the lead's
partition; a closed deal whose lead is known → ``lead.deal_closed`` (``closed:<deal>:<lead>:<outcome>:<close ms>``).
Their ids are deterministic, so a replay resends the same ids and dedup drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo


from salespulse.families.pipeline.pipelines import LOST, WON, Pipelines
from salespulse.families.pipeline.state import Deal, Entity, PipelineLead, Quota
from salespulse.families.pipeline.rules import (
    DealView,
    NowKey,
    WindowKey,
    deal_contribution,
    lead_contribution,
    open_fields,
    quota_contribution,
    stage_parts,
    view,
    window_change,
)
from salespulse.models.events import CustomerChurned, DealEvent, DealLeadLinked, Event, EventBase, LeadEvent, LeadConverted, LeadDealClosed, QuotaSet
from salespulse.models.events import derived_event_id
from salespulse.families import keys
from salespulse.families.keys import Key
from salespulse.families.pipeline.spec import SPEC, derived
from salespulse.families.entity_clocks import EntityClocks
from salespulse.families.pipeline.stalls import StallRule
from salespulse.families.pipeline.fold import (
    DEAL_EVENTS,
    LEAD_EVENTS,
    config_quota_events,
    record_deal_event,
    record_lead_event,
)
from salespulse.families.state import Cell, StateStore
from salespulse.families.queries import keyed
from salespulse.families.windowed import WindowedFamily
from salespulse.families.windows import iso
from salespulse.outputs.aggregates import NOW, Partial, partial

log = logging.getLogger(__name__)
E = TypeVar("E", Deal, PipelineLead, Quota)

FAMILY = SPEC.name
REDIS_PREFIX = SPEC.redis_prefix
#: Scopes of the *now* gauges published to Redis (``gauge`` feeds Prometheus only).
NOW_PUBLISHED = ("pipeline", "rep", "team")
_EPSILON = 1e-9
#: Parts of the structured ids of the open-pipeline scopes only Prometheus reads.
_OPEN_ID_PARTS = {"gauge": 3, "team_gauge": 4}
#: (pipeline, stage) pairs the config does not know, already reported: once per process.
_REPORTED: set[tuple[str, str]] = set()


class PipelineFamily(WindowedFamily):
    """Stage entries, transitions, time in stage, closes, revenue, cycles, lead cohorts, quotas, open pipeline."""

    spec = SPEC

    def __init__(  # the windows' store, the states' store, then the windows' zone and retention
        self, cells: StateStore[Cell], states: StateStore[Entity], tz: ZoneInfo, retention_s: float,
        pipelines: Pipelines | None = None,
        currency: str = "USD",
        team_of_rep: Mapping[str, str] | None = None,
        state_retention_s: float | None = None,
        config_quotas: Mapping[str, Mapping[str, float]] | None = None,
        stalls: StallRule | None = None,
    ) -> None:
        """``config_quotas``: rep -> {YYYY-MM: amount} from the config, sent as ``quota.set`` at start."""
        super().__init__(cells, tz, retention_s)
        self.states = states
        self.pipelines = pipelines or Pipelines()
        self.currency = currency
        self.derived = derived(self.pipelines, [currency])
        self.team_of_rep: Mapping[str, str] = team_of_rep or {}
        #: Closed deals, leads and quotas are forgotten this long after their last fact (open deals never).
        self.state_retention_s = retention_s + 180 * 86400 if state_retention_s is None else state_retention_s
        #: Per partition: open-pipeline fields per (scope, id), from the deal states.
        self.open: dict[int, dict[tuple[str, str], dict[str, float]]] = {}
        self.open_dirty: set[tuple[int, str, str]] = set()
        #: Per partition: the state keys of quotas (so a scrape need not walk every deal and lead).
        self.quota_keys: dict[int, set[str]] = {}
        self._follow_ups: list[Event] = []
        self._config_quotas = config_quota_events(config_quotas or {}, currency)
        #: The ``deal_stalled`` alert rule, when the config sets ``stalled_after_days`` for some stage.
        self.stalls = stalls

    @property
    def stores(self) -> tuple[StateStore[Any], ...]:
        """Write order: aggregates before the states they were derived from, then the stall clocks."""
        if self.stalls is None:
            return (self.cells, self.states)
        return (self.cells, self.states, self.stalls.clocks.store)

    @property
    def alert_sources(self) -> tuple[EntityClocks, ...]:
        """The ``deal_stalled`` clocks, for the engine's alert clock (none unless configured)."""
        return () if self.stalls is None else (self.stalls.clocks,)

    # -- loading -----------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        """Rebuild the partition's open-pipeline gauges from its deal states."""
        self.open[partition] = {}
        self.quota_keys[partition] = set()
        for key, _newest, watch in self.states.indexed(partition):
            if watch is None:
                continue  # a lead: nothing to rebuild from it
            state = self.states.get(partition, key)
            if isinstance(state, Quota):
                self.quota_keys[partition].add(key)
            elif isinstance(state, Deal):
                self._apply_now(partition, {}, open_fields(self._view(state)))
        for scope, ident in self.open[partition]:
            self.open_dirty.add((partition, scope, ident))
        if self.stalls is not None:
            self.stalls.clocks.on_loaded(partition)

    def drop_partition(self, partition: int) -> None:
        super().drop_partition(partition)
        self.open.pop(partition, None)
        self.quota_keys.pop(partition, None)
        self.open_dirty = {entry for entry in self.open_dirty if entry[0] != partition}
        if self.stalls is not None:
            self.stalls.clocks.drop_partition(partition)

    def startup_events(self) -> list[Event]:
        """The config's quotas as ``quota.set`` events (fixed ids: every worker sends them, dedup keeps one)."""
        return list(self._config_quotas)

    def take_follow_ups(self) -> list[Event]:
        taken, self._follow_ups = self._follow_ups, []
        return taken

    # -- events ------------------------------------------------------------------------------------

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool:
        """Update the deal, lead or quota an event concerns; True if it was one of this family's events."""
        if isinstance(event, DEAL_EVENTS):
            return self._apply_deal(partition, offset, event, now, now if arrived is None else arrived)
        if isinstance(event, CustomerChurned):
            if event.lead_id:  # keyed by the lead (partition_key prefers lead_id)
                return self._apply_lead(partition, offset, event, now)
            return self._apply_deal(partition, offset, event, now)
        if isinstance(event, LEAD_EVENTS):
            return self._apply_lead(partition, offset, event, now)
        if isinstance(event, QuotaSet):
            return self._apply_quota(partition, offset, event, now)
        return False

    def _state(self, partition: int, key: str, offset: int, kind: type[E]) -> E | None:
        """The state to change, or None if it already holds this offset (a replay after a crash)."""
        state = self.states.get(partition, key)
        if state is None:
            state = self.states.cell(partition, key)
        if not isinstance(state, kind):
            raise TypeError(f"state {key!r} is a {type(state).__name__}, not a {kind.__name__}")
        return None if offset <= state.wm else state

    def _apply_deal(self, partition: int, offset: int, event: DealEvent | CustomerChurned, now: float, arrived: float | None = None) -> bool:
        deal_id = event.deal_id
        if deal_id is None:
            return False
        state = self._state(partition, f"d:{deal_id}", offset, Deal)
        if state is None:
            return True
        before_windowed, before_now = self._deal_contribution(state)
        before_view = self._view(state)
        before_lead = state.lead.value if state.lead is not None else None
        record_deal_event(state, event)
        self._report_unknown_stage(event)
        after_windowed, after_now = self._deal_contribution(state)
        self._apply_windows(partition, offset, now, before_windowed, after_windowed)
        self._apply_now(partition, before_now, after_now)
        self._deal_follow_ups(deal_id, state, before_lead, before_view)
        if self.stalls is not None:
            self.stalls.observe(partition, deal_id, self._view(state), now if arrived is None else arrived)
        self.states.touch(partition, f"d:{deal_id}")
        return True

    def _apply_lead(self, partition: int, offset: int, event: LeadEvent | CustomerChurned, now: float) -> bool:
        lead_id = event.lead_id
        if lead_id is None:
            return False
        state = self._state(partition, f"l:{lead_id}", offset, PipelineLead)
        if state is None:
            return True
        before = lead_contribution(state, self.team_of_rep)
        record_lead_event(state, event)
        after = lead_contribution(state, self.team_of_rep)
        self._apply_windows(partition, offset, now, before, after)
        if isinstance(event, LeadConverted):
            self._follow_ups.append(
                DealLeadLinked(
                    event_id=derived_event_id("link", event.deal_id, lead_id),
                    type="deal.lead_linked",
                    occurred_at=event.occurred_at,
                    deal_id=event.deal_id,
                    lead_id=lead_id,
                )
            )
        self.states.touch(partition, f"l:{lead_id}")
        return True

    def _apply_quota(self, partition: int, offset: int, event: QuotaSet, now: float) -> bool:
        key = f"q:{event.rep_id}:{event.period}"
        state = self._state(partition, key, offset, Quota)
        if state is None:
            return True
        start = self._month_start(event.period)
        before = quota_contribution(state, start, event.rep_id, self.team_of_rep, self.currency)
        at = event.occurred_at.timestamp()
        current = state.value
        if current is None or at >= current[0]:  # equal times: the later in the log (config quotas) wins
            state.value = (at, event.event_id, event.amount, event.currency, event.team)
        after = quota_contribution(state, start, event.rep_id, self.team_of_rep, self.currency)
        self._apply_windows(partition, offset, now, before, after)
        self.states.touch(partition, key)
        self.quota_keys.setdefault(partition, set()).add(key)
        return True

    def _month_start(self, period: str) -> float:
        year, month = (int(part) for part in period.split("-"))
        return datetime(year, month, 1, tzinfo=self.tz).timestamp()

    # -- contributions -------------------------------------------------------------------------------

    def _open_deal(self, state: Entity | None) -> bool:
        return isinstance(state, Deal) and self._view(state).status == "open"

    def _view(self, deal: Deal) -> DealView:
        return view(deal, self.pipelines, self.currency, self.team_of_rep)

    def _deal_contribution(self, deal: Deal) -> tuple[dict[WindowKey, float], dict[NowKey, float]]:
        return deal_contribution(deal, self.pipelines, self.currency, self.team_of_rep)

    def _apply_windows(
        self, partition: int, offset: int, now: float, before: Mapping[WindowKey, float], after: Mapping[WindowKey, float]
    ) -> None:
        for (epoch, grain), deltas in window_change(before, after).items():
            self.add(partition, offset, epoch, now, deltas, only=grain)

    def _apply_now(self, partition: int, before: Mapping[NowKey, float], after: Mapping[NowKey, float]) -> None:
        gauges = self.open.setdefault(partition, {})
        for key in before.keys() | after.keys():
            change = after.get(key, 0.0) - before.get(key, 0.0)
            if not change:
                continue
            scope, ident, name = key
            fields = gauges.setdefault((scope, ident), {})
            value = fields.get(name, 0.0) + change
            if abs(value) < _EPSILON:
                fields.pop(name, None)
            else:
                fields[name] = value
            if not fields:
                del gauges[(scope, ident)]
            if scope in NOW_PUBLISHED:
                self.open_dirty.add((partition, scope, ident))

    def _deal_follow_ups(self, deal_id: str, state: Deal, before_lead: str | None, before: DealView) -> None:
        lead = state.lead
        if lead is None:
            return
        lead_id = lead.value
        created = state.created
        if lead_id != before_lead and lead.event_id == "created" and created is not None:
            self._follow_ups.append(
                LeadConverted(
                    event_id=derived_event_id("convert", deal_id, lead_id),
                    type="lead.converted",
                    occurred_at=datetime.fromtimestamp(created.at, timezone.utc),
                    lead_id=lead_id,
                    deal_id=deal_id,
                )
            )
        after = self._view(state)
        if after.status not in (WON, LOST) or after.at is None or after.pipeline is None:
            return
        if (lead_id, after.status) == (before_lead, before.status):
            return
        self._follow_ups.append(
            LeadDealClosed(
                event_id=derived_event_id("closed", deal_id, lead_id, after.status, round(after.at * 1000)),
                type="lead.deal_closed",
                occurred_at=datetime.fromtimestamp(after.at, timezone.utc),
                lead_id=lead_id,
                deal_id=deal_id,
                pipeline=after.pipeline,
                outcome=after.status,
                amount=after.amount if after.status == WON else None,
                currency=after.currency if after.status == WON else None,
            )
        )

    def _report_unknown_stage(self, event: EventBase) -> None:
        stage = getattr(event, "to_stage", None) or getattr(event, "stage", None)
        pipeline = getattr(event, "pipeline", None)
        if stage is None or pipeline is None or self.pipelines.knows(pipeline, stage):
            return
        if (pipeline, stage) not in _REPORTED:
            _REPORTED.add((pipeline, stage))
            log.warning(
                "stage %r of pipeline %r is not in the config: counted, ranked after the known stages, "
                "default probability 0", stage, pipeline,
            )

    # -- outputs -----------------------------------------------------------------------------------

    def mark_partition_dirty(self, partition: int) -> None:
        super().mark_partition_dirty(partition)
        for scope, ident in self.open.get(partition, {}):
            if scope in NOW_PUBLISHED:
                self.open_dirty.add((partition, scope, ident))

    def render(self, owned: set[int], now: float | None = None, slow_budget: int | None = None) -> list[Partial]:
        """Windowed partials (see ``WindowedFamily.render``) plus the *now* open-pipeline partials."""
        partials = super().render(owned, now, slow_budget)
        dirty, self.open_dirty = self.open_dirty, {entry for entry in self.open_dirty if entry[0] not in owned}
        if not dirty:
            return partials
        updated_at = iso(now if now is not None else datetime.now(timezone.utc).timestamp())
        for partition, scope, ident in dirty:
            if partition not in owned:
                continue
            fields = dict(self.open.get(partition, {}).get((scope, ident), {}))
            wm = self.version(partition, self.partition_wm.get(partition, -1))
            partials.append(partial(self.name, self.redis_prefix, scope, ident, NOW, partition, wm, fields, 0, updated_at))
        return partials

    def open_totals(self, owned: Iterable[int], scope: str) -> dict[str, dict[str, float]]:
        """Open-pipeline fields per id of one scope, summed over owned partitions (Prometheus)."""
        totals: dict[str, dict[str, float]] = {}
        for partition in owned:
            for (s, ident), fields in self.open.get(partition, {}).items():
                if s == scope:
                    into = totals.setdefault(ident, {})
                    for name, value in fields.items():
                        into[name] = into.get(name, 0.0) + value
        return totals

    def open_totals_keyed(
        self, owned: Iterable[int], scope: str, malformed: Callable[[str], None]
    ) -> dict[Key, dict[str, float]]:
        """``open_totals`` per structured id (the ``gauge`` scope's ``(pipeline, stage, currency)``)."""
        parts = _OPEN_ID_PARTS[scope]
        return keyed(self.open_totals(owned, scope), lambda ident: keys.decode(ident, parts), malformed)

    def quotas(self, owned: Iterable[int]) -> dict[tuple[str, str, str], float]:
        """(rep, period, currency) → quota amount, from the quota states of owned partitions (Prometheus)."""
        out: dict[tuple[str, str, str], float] = {}
        for partition in owned:
            for key in sorted(self.quota_keys.get(partition, ())):
                state = self.states.get(partition, key)
                if isinstance(state, Quota) and state.value is not None:
                    rep, period = key[2:].rsplit(":", 1)
                    value = state.value
                    out[(rep, period, value[3] or self.currency)] = float(value[2])
        return out

    def id_parts(self, scope: str, ident: str) -> Key:
        """A stage scope's id ``<pipeline>/<stage>`` as ``(pipeline, stage)``; see ``WindowedFamily.id_parts``."""
        return stage_parts(ident) if scope == "stage" else super().id_parts(scope, ident)

    def expire(self, partition: int, now: float) -> int:
        """Expire window cells, and closed deals, leads and quotas older than the state retention."""
        expired = super().expire(partition, now)
        cutoff = now - self.state_retention_s
        stale = [
            key
            for key, newest, _watch in self.states.indexed(partition)
            if newest < cutoff and not self._open_deal(self.states.get(partition, key))
        ]
        if stale:
            self.states.delete_many(partition, stale)  # one changelog record, not one per state
            if self.stalls is not None:
                self.stalls.clocks.forget(partition, [key[2:] for key in stale if key.startswith("d:")])
            self.quota_keys.get(partition, set()).difference_update(stale)
        return expired + len(stale)
