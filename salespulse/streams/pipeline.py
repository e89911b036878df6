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
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from salespulse.metrics.pipeline import (
    LOST,
    WON,
    DealView,
    Pipelines,
    State,
    deal_contribution,
    lead_contribution,
    quota_contribution,
    view,
    window_change,
)
from salespulse.models.events import (
    EARLIEST_OCCURRED_AT,
    CustomerChurned,
    DealCreated,
    DealLeadLinked,
    DealLost,
    DealStageChanged,
    DealUpdated,
    DealWon,
    Event,
    derived_event_id,
    LeadAssigned,
    LeadConverted,
    LeadCreated,
    LeadDealClosed,
    LeadQualified,
    QuotaSet,
)
from salespulse.publishers.partials import Partial
from salespulse.streams.cells import CellStore
from salespulse.streams.record_log import RecordLog, delete_states
from salespulse.streams.windowed import Number, WindowedFamily

log = logging.getLogger(__name__)

FAMILY = "pipeline"
REDIS_PREFIX = "salespulse:pipeline"
NOW_WINDOW = "now"
#: Scopes of the *now* gauges published to Redis (``gauge`` feeds Prometheus only).
NOW_PUBLISHED = ("pipeline", "rep", "team")
_EPSILON = 1e-9
#: (pipeline, stage) pairs the config does not know, already reported: once per process.
_REPORTED: set[tuple[str, str]] = set()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


class PipelineFamily(WindowedFamily):
    """Stage entries, transitions, time in stage, closes, revenue, cycles, lead cohorts, quotas, open pipeline."""

    name = FAMILY
    redis_prefix = REDIS_PREFIX
    published_scopes = ("rep", "team", "source", "pipeline", "stage")
    all_time_scopes = ("transition", "pipeline_rep")
    rolling_hours = {"24h": 24, "7d": 168, "30d": 720}

    def __init__(
        self,
        cells: CellStore,
        states: RecordLog | CellStore,
        tz: ZoneInfo,
        retention_s: float,
        pipelines: Pipelines | None = None,
        currency: str = "USD",
        team_of_rep: Mapping[str, str] | None = None,
        state_retention_s: float | None = None,
    ) -> None:
        super().__init__(cells, tz, retention_s)
        self.states = states
        self.pipelines = pipelines or Pipelines()
        self.currency = currency
        self.team_of_rep: Mapping[str, str] = team_of_rep or {}
        #: Closed deals, leads and quotas are forgotten this long after their last fact (open deals never).
        self.state_retention_s = retention_s + 180 * 86400 if state_retention_s is None else state_retention_s
        #: Per partition: open-pipeline fields per (scope, id), from the deal states.
        self.open: dict[int, dict[tuple[str, str], dict[str, float]]] = {}
        self.open_dirty: set[tuple[int, str, str]] = set()
        #: Per partition: the state keys of quotas (so a scrape need not walk every deal and lead).
        self.quota_keys: dict[int, set[str]] = {}
        self._follow_ups: list[Event] = []

    @property
    def stores(self) -> tuple[CellStore, RecordLog | CellStore]:
        """Write order: aggregates before the states they were derived from."""
        return (self.cells, self.states)

    # -- loading -----------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        """Rebuild the partition's open-pipeline gauges from its deal states."""
        self.open[partition] = {}
        self.quota_keys[partition] = set()
        for key, state in self.states.items(partition):
            if key.startswith("q:"):
                self.quota_keys[partition].add(key)
            elif key.startswith("d:"):
                _, now = self._deal_contribution(state)
                self._apply_now(partition, {}, now)
        for scope, ident in self.open[partition]:
            self.open_dirty.add((partition, scope, ident))

    def drop_partition(self, partition: int) -> None:
        super().drop_partition(partition)
        self.open.pop(partition, None)
        self.quota_keys.pop(partition, None)
        self.open_dirty = {entry for entry in self.open_dirty if entry[0] != partition}

    def take_follow_ups(self) -> list[Event]:
        taken, self._follow_ups = self._follow_ups, []
        return taken

    # -- events ------------------------------------------------------------------------------------

    def apply(self, partition: int, offset: int, event: Any, now: float, arrived: float | None = None) -> bool:
        """Update the deal, lead or quota an event concerns; True if it was one of this family's events."""
        if isinstance(event, (DealCreated, DealStageChanged, DealWon, DealLost, DealUpdated, DealLeadLinked)):
            return self._apply_deal(partition, offset, event, now)
        if isinstance(event, CustomerChurned):
            if event.lead_id:  # keyed by the lead (partition_key prefers lead_id)
                return self._apply_lead(partition, offset, event, now)
            return self._apply_deal(partition, offset, event, now)
        if isinstance(event, (LeadCreated, LeadAssigned, LeadQualified, LeadConverted, LeadDealClosed)):
            return self._apply_lead(partition, offset, event, now)
        if isinstance(event, QuotaSet):
            return self._apply_quota(partition, offset, event, now)
        return False

    def _state(self, partition: int, key: str, offset: int) -> State | None:
        """The state to change, or None if it already holds this offset (a replay after a crash)."""
        state = self.states.get(partition, key)
        if state is None:
            state = self.states.cell(partition, key)
        return None if offset <= state["wm"] else state

    def _apply_deal(self, partition: int, offset: int, event: Any, now: float) -> bool:
        deal_id = event.deal_id
        state = self._state(partition, f"d:{deal_id}", offset)
        if state is None:
            return True
        before_windowed, before_now = self._deal_contribution(state)
        before_view = self._view(state)
        before_lead = (state.get("lead") or [0, "", None])[2]
        _record_deal_event(state, event)
        self._report_unknown_stage(event)
        after_windowed, after_now = self._deal_contribution(state)
        self._apply_windows(partition, offset, now, before_windowed, after_windowed)
        self._apply_now(partition, before_now, after_now)
        self._deal_follow_ups(deal_id, state, before_lead, before_view)
        self.states.touch(partition, f"d:{deal_id}")
        return True

    def _apply_lead(self, partition: int, offset: int, event: Any, now: float) -> bool:
        lead_id = event.lead_id
        state = self._state(partition, f"l:{lead_id}", offset)
        if state is None:
            return True
        before = lead_contribution(state, self.team_of_rep)
        _record_lead_event(state, event)
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
        state = self._state(partition, key, offset)
        if state is None:
            return True
        start = self._month_start(event.period)
        before = quota_contribution(state, start, event.rep_id, self.team_of_rep, self.currency)
        at = event.occurred_at.timestamp()
        current = state.get("value")
        if current is None or at >= current[0]:  # equal times: the later in the log (config quotas) wins
            state["value"] = [at, event.event_id, event.amount, event.currency, event.team]
        after = quota_contribution(state, start, event.rep_id, self.team_of_rep, self.currency)
        self._apply_windows(partition, offset, now, before, after)
        self.states.touch(partition, key)
        self.quota_keys.setdefault(partition, set()).add(key)
        return True

    def _month_start(self, period: str) -> float:
        year, month = (int(part) for part in period.split("-"))
        return datetime(year, month, 1, tzinfo=self.tz).timestamp()

    # -- contributions -------------------------------------------------------------------------------

    def _view(self, deal: State) -> DealView:
        return view(deal, self.pipelines, self.currency, self.team_of_rep)

    def _deal_contribution(self, deal: State) -> tuple[dict[Any, float], dict[Any, float]]:
        return deal_contribution(deal, self.pipelines, self.currency, self.team_of_rep)

    def _apply_windows(
        self, partition: int, offset: int, now: float, before: Mapping[Any, float], after: Mapping[Any, float]
    ) -> None:
        for (epoch, grain), deltas in window_change(before, after).items():
            self.add(partition, offset, epoch, now, deltas, only=grain)

    def _apply_now(self, partition: int, before: Mapping[Any, float], after: Mapping[Any, float]) -> None:
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

    def _deal_follow_ups(self, deal_id: str, state: State, before_lead: str | None, before: DealView) -> None:
        lead = state.get("lead")
        if lead is None:
            return
        lead_id = lead[2]
        if lead_id != before_lead and lead[1] == "created":
            created = state["created"]
            self._follow_ups.append(
                LeadConverted(
                    event_id=derived_event_id("convert", deal_id, lead_id),
                    type="lead.converted",
                    occurred_at=datetime.fromtimestamp(created[0], timezone.utc),
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

    def _report_unknown_stage(self, event: Any) -> None:
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
        updated_at = _iso(now if now is not None else datetime.now(timezone.utc).timestamp())
        for partition, scope, ident in dirty:
            if partition not in owned:
                continue
            fields = dict(self.open.get(partition, {}).get((scope, ident), {}))
            wm = self.version(partition, self.partition_wm.get(partition, -1))
            partials.append(
                Partial(
                    family=self.name,
                    redis_key=f"{self.redis_prefix}:open:{scope}:{ident}",
                    partition=partition,
                    watermark=wm,
                    fields=fields,
                    ttl_s=0,
                    topic_key=f"open:{scope}:{ident}:p{partition}",
                    record=self.record(scope, ident, NOW_WINDOW, partition, wm, fields, updated_at),
                )
            )
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

    def quotas(self, owned: Iterable[int]) -> dict[tuple[str, str, str], float]:
        """(rep, period, currency) → quota amount, from the quota states of owned partitions (Prometheus)."""
        out: dict[tuple[str, str, str], float] = {}
        for partition in owned:
            for key in sorted(self.quota_keys.get(partition, ())):
                state = self.states.get(partition, key)
                if state is not None and state.get("value") is not None:
                    rep, period = key[2:].rsplit(":", 1)
                    value = state["value"]
                    out[(rep, period, value[3] or self.currency)] = float(value[2])
        return out

    def published_fields(self, fields: Mapping[str, Number]) -> dict[str, Number]:
        out = dict(fields)
        if 0 in out.values():  # a field back to zero (a deal moved on ...): filter only then
            return {name: value for name, value in out.items() if value}
        return out

    def expire(self, partition: int, now: float) -> int:
        """Expire window cells, and closed deals, leads and quotas older than the state retention."""
        expired = super().expire(partition, now)
        cutoff = now - self.state_retention_s
        stale = [
            key
            for key, state in self.states.items(partition)
            if _newest_fact(key, state) < cutoff and not (key.startswith("d:") and self._view(state).status == "open")
        ]
        if stale:
            delete_states(self.states, partition, stale)  # one changelog record, not one per state
            self.quota_keys.get(partition, set()).difference_update(stale)
        return expired + len(stale)


def config_quota_events(quotas: Mapping[str, Mapping[str, float]], currency: str) -> list[QuotaSet]:
    """The config's quotas as ``quota.set`` events to the reps' partitions.

    Stamped at the earliest accepted time, so any real ``quota.set`` (later in event time) overrides
    them; their ids name rep, period, amount and currency, so resending an unchanged config is
    dropped by dedup, and a changed amount (same time, later in the log) replaces the old one.
    """
    return [
        QuotaSet(
            event_id=derived_event_id("config-quota", rep, period, repr(amount), currency),
            type="quota.set",
            occurred_at=EARLIEST_OCCURRED_AT,
            rep_id=rep,
            period=period,
            amount=amount,
            currency=currency,
        )
        for rep, periods in sorted(quotas.items())
        for period, amount in sorted(periods.items())
    ]


# --- folding events into states (order-independent: every field keeps the latest by (time, event id)) -----


def _newer(current: list[Any] | None, candidate: list[Any]) -> list[Any]:
    """The later of two ``[at, eid, ...]`` values by (time, event id)."""
    if current is None or (candidate[0], candidate[1]) >= (current[0], current[1]):
        return candidate
    return current


def _insert(items: list[list[Any]], item: list[Any]) -> None:
    if all(existing[1] != item[1] for existing in items):
        items.append(item)
        items.sort(key=lambda entry: (entry[0], entry[1]))


def _record_deal_event(state: State, event: Any) -> None:
    """Fold one deal event into a deal state (see ``salespulse.metrics.pipeline`` for the layout)."""
    at, eid = event.occurred_at.timestamp(), event.event_id
    state["last"] = max(state.get("last", at), at)
    if isinstance(event, CustomerChurned):
        churned = state.get("churned")
        if churned is None or (at, eid) < (churned[0], churned[1]):
            state["churned"] = [at, eid, event.rep_id]
        return
    if isinstance(event, DealLeadLinked):
        lead = state.get("lead")
        if lead is None or (lead[1] != "created" and (at, eid) >= (lead[0], lead[1])):
            state["lead"] = [at, eid, event.lead_id]
        return
    if isinstance(event, DealCreated):
        created = state.get("created")
        if created is None or (at, eid) < (created[0], created[1]):
            state["created"] = [at, eid, event.pipeline, event.kind.value if event.kind else None]
        _insert(state.setdefault("entries", []), [at, eid, event.pipeline, event.stage, None, event.probability])
        if event.lead_id:
            lead = state.get("lead")
            if lead is None or lead[1] != "created" or (at, eid) < (lead[0], lead[1]):
                state["lead"] = [at, "created", event.lead_id]
    elif isinstance(event, DealStageChanged):
        _insert(
            state.setdefault("entries", []),
            [at, eid, event.pipeline, event.to_stage, event.from_stage, event.probability],
        )
    elif isinstance(event, DealWon):
        _insert(state.setdefault("closes", []), [at, eid, event.pipeline, WON, None, event.amount, event.currency])
    elif isinstance(event, DealLost):
        _insert(state.setdefault("closes", []), [at, eid, event.pipeline, LOST, event.reason, None, None])
    elif isinstance(event, DealUpdated):
        if event.probability is not None:
            _insert(state.setdefault("probs", []), [at, eid, event.probability])
        if event.expected_close is not None:
            state["expected_close"] = _newer(state.get("expected_close"), [at, eid, event.expected_close.timestamp()])
    if not isinstance(event, (DealWon, DealLost)) and getattr(event, "amount", None) is not None:
        state["amount"] = _newer(state.get("amount"), [at, eid, event.amount])
    if not isinstance(event, (DealWon, DealLost)) and getattr(event, "currency", None) is not None:
        state["currency"] = _newer(state.get("currency"), [at, eid, event.currency])
    if event.rep_id:
        state["owner"] = _newer(state.get("owner"), [at, eid, event.rep_id])
    if event.team:
        state["team"] = _newer(state.get("team"), [at, eid, event.team])
    if event.source:
        state["source"] = _newer(state.get("source"), [at, eid, event.source])


def _record_lead_event(state: State, event: Any) -> None:
    """Fold one lead event into the family's own lead state."""
    at, eid = event.occurred_at.timestamp(), event.event_id
    state["last"] = max(state.get("last", at), at)
    if isinstance(event, LeadCreated):
        created = state.get("created")
        if created is None or (at, eid) < (created[0], created[1]):
            state["created"] = [at, eid]
            if event.source:
                state["source"] = [at, eid, event.source]
        if event.mql:
            state["mql"] = True
    elif isinstance(event, LeadQualified):
        state["mql"] = True
    elif isinstance(event, LeadConverted):
        state["converted"] = True
        state.setdefault("deals", {}).setdefault(event.deal_id, None)
    elif isinstance(event, LeadDealClosed):
        deals = state.setdefault("deals", {})
        deals[event.deal_id] = _newer(deals.get(event.deal_id), [at, eid, event.outcome.value])
        return  # the worker's own link event: it says nothing of the lead's owner or team
    elif isinstance(event, CustomerChurned):
        churned = state.get("churned")
        if churned is None or (at, eid) < (churned[0], churned[1]):
            state["churned"] = [at, eid, event.rep_id]
        return
    if event.rep_id and isinstance(event, (LeadCreated, LeadAssigned)):
        state["owner"] = _newer(state.get("owner"), [at, eid, event.rep_id])
    if event.team and isinstance(event, (LeadCreated, LeadAssigned)):
        state["team"] = _newer(state.get("team"), [at, eid, event.team])


def _newest_fact(key: str, state: State) -> float:
    """The time of a state's newest fact (for expiry); a quota's is the end of its month."""
    if key.startswith("q:"):
        period = key.rsplit(":", 1)[1]
        year, month = (int(part) for part in period.split("-"))
        return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
    return float(state.get("last", 0.0))
