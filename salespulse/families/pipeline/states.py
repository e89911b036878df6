"""Folding events into the pipeline family's states: deals, leads and quotas (pure functions, any order).

Every field keeps the latest value by ``(time, event id)`` and every list is sorted by it, so the same
events in any order, or again, give the same state (layout: ``families.pipeline.rules``; stage order:
``families.pipeline.pipelines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from salespulse.families.pipeline.pipelines import LOST, WON
from salespulse.families.pipeline.rules import State
from salespulse.models.events import (
    EventBase,
    EARLIEST_OCCURRED_AT,
    CustomerChurned,
    DealCreated,
    DealLeadLinked,
    DealLost,
    DealStageChanged,
    DealUpdated,
    DealWon,
    LeadAssigned,
    LeadConverted,
    LeadCreated,
    LeadDealClosed,
    LeadQualified,
    QuotaSet,
    derived_event_id,
)

#: The events that change a deal's state (a churn names a deal when it names no lead).
DEAL_EVENTS = (DealCreated, DealStageChanged, DealWon, DealLost, DealUpdated, DealLeadLinked)
#: The events that change a lead's state.
LEAD_EVENTS = (LeadCreated, LeadAssigned, LeadQualified, LeadConverted, LeadDealClosed)


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


def _newer(current: list[Any] | None, candidate: list[Any]) -> list[Any]:
    """The later of two ``[at, eid, ...]`` values by (time, event id)."""
    if current is None or (candidate[0], candidate[1]) >= (current[0], current[1]):
        return candidate
    return current


def _older(current: list[Any] | None, candidate: list[Any]) -> list[Any]:
    """The earlier of two ``[at, eid, ...]`` values by (time, event id)."""
    if current is None or (candidate[0], candidate[1]) < (current[0], current[1]):
        return candidate
    return current


def _stamp(state: State, event: EventBase) -> tuple[float, str]:
    """An event's ``(time, id)``, noting its time as the state's newest fact (for expiry)."""
    at = event.occurred_at.timestamp()
    state["last"] = max(state.get("last", at), at)
    return at, event.event_id


def _insert(items: list[list[Any]], item: list[Any]) -> None:
    if all(existing[1] != item[1] for existing in items):
        items.append(item)
        items.sort(key=lambda entry: (entry[0], entry[1]))


def record_deal_event(state: State, event: EventBase) -> None:
    """Fold one deal event into a deal state (see ``families.pipeline.rules`` for the layout)."""
    at, eid = _stamp(state, event)
    if isinstance(event, CustomerChurned):
        state["churned"] = _older(state.get("churned"), [at, eid, event.rep_id])
        return
    if isinstance(event, DealLeadLinked):
        lead = state.get("lead")
        if lead is None or (lead[1] != "created" and (at, eid) >= (lead[0], lead[1])):
            state["lead"] = [at, eid, event.lead_id]
        return
    if isinstance(event, DealCreated):
        kind = event.kind.value if event.kind else None
        state["created"] = _older(state.get("created"), [at, eid, event.pipeline, kind])
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
    if not isinstance(event, (DealWon, DealLost)):
        amount: float | None = getattr(event, "amount", None)
        if amount is not None:
            state["amount"] = _newer(state.get("amount"), [at, eid, amount])
        currency: str | None = getattr(event, "currency", None)
        if currency is not None:
            state["currency"] = _newer(state.get("currency"), [at, eid, currency])
    if event.rep_id:
        state["owner"] = _newer(state.get("owner"), [at, eid, event.rep_id])
    if event.team:
        state["team"] = _newer(state.get("team"), [at, eid, event.team])
    if event.source:
        state["source"] = _newer(state.get("source"), [at, eid, event.source])


def record_lead_event(state: State, event: EventBase) -> None:
    """Fold one lead event into the family's own lead state."""
    at, eid = _stamp(state, event)
    if isinstance(event, LeadCreated):
        created = [at, eid]
        if _older(state.get("created"), created) is created:
            state["created"] = created
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
        state["churned"] = _older(state.get("churned"), [at, eid, event.rep_id])
        return
    if event.rep_id and isinstance(event, (LeadCreated, LeadAssigned)):
        state["owner"] = _newer(state.get("owner"), [at, eid, event.rep_id])
    if event.team and isinstance(event, (LeadCreated, LeadAssigned)):
        state["team"] = _newer(state.get("team"), [at, eid, event.team])


def newest_fact(key: str, state: State) -> float:
    """The time of a state's newest fact (for expiry); a quota's is the end of its month."""
    if key.startswith("q:"):
        period = key.rsplit(":", 1)[1]
        year, month = (int(part) for part in period.split("-"))
        return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
    return float(state.get("last", 0.0))
