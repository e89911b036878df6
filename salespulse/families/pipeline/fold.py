"""Folding events into the pipeline family's states: deals, leads and quotas (pure functions, any order).

Every field keeps the latest value by ``(time, event id)`` and every list is sorted by it, so the same
events in any order, or again, give the same state (layout: ``families.pipeline.state``; stage order:
``families.pipeline.pipelines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from sys import intern
from typing import TypeVar

from salespulse.families.pipeline.state import (
    Churn,
    Close,
    Creation,
    Deal,
    Entry,
    Number,
    Outcome,
    PipelineLead,
    Stamp,
    Text,
)
from salespulse.families.pipeline.pipelines import LOST, WON
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

T = TypeVar("T", Entry, Close, Number)
#: A fact stamped with its event's ``(at, event id)``.
Fact = TypeVar("Fact", Text, Number, Churn, Creation, Stamp, Outcome)
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


def _newer(current: Fact | None, candidate: Fact) -> Fact:
    """The later of two facts by (time, event id)."""
    if current is None or (candidate[0], candidate[1]) >= (current[0], current[1]):
        return candidate
    return current


def _older(current: Fact | None, candidate: Fact) -> Fact:
    """The earlier of two facts by (time, event id)."""
    if current is None or (candidate[0], candidate[1]) < (current[0], current[1]):
        return candidate
    return current


def _stamp(state: Deal | PipelineLead, event: EventBase) -> tuple[float, str]:
    """An event's ``(time, id)``, noting its time as the state's newest fact (for expiry)."""
    at = event.occurred_at.timestamp()
    state.last = at if state.last is None else max(state.last, at)
    return at, event.event_id


def _inserted(items: tuple[T, ...], item: T) -> tuple[T, ...]:
    """``items`` with ``item`` added in (time, event id) order, unless an item of its event is there."""
    if any(existing[1] == item[1] for existing in items):
        return items
    merged: list[T] = list(items)
    merged.append(item)
    merged.sort(key=lambda entry: (entry[0], entry[1]))
    return tuple(merged)


def _text(at: float, eid: str, value: str) -> Text:
    return Text(at, eid, intern(value))


def record_deal_event(state: Deal, event: EventBase) -> None:
    """Fold one deal event into a deal state (layout: ``families.pipeline.state``)."""
    at, eid = _stamp(state, event)
    if isinstance(event, CustomerChurned):
        state.churned = _older(state.churned, Churn(at, eid, event.rep_id and intern(event.rep_id)))
        return
    if isinstance(event, DealLeadLinked):
        lead = state.lead
        if lead is None or (lead.event_id != "created" and (at, eid) >= (lead.at, lead.event_id)):
            state.lead = Text(at, eid, event.lead_id)
        return
    if isinstance(event, DealCreated):
        kind = event.kind.value if event.kind else None
        state.created = _older(state.created, Creation(at, eid, intern(event.pipeline), kind))
        entry = Entry(at, eid, intern(event.pipeline), intern(event.stage), None, event.probability)
        state.entries = _inserted(state.entries, entry)
        if event.lead_id:
            lead = state.lead
            if lead is None or lead.event_id != "created" or (at, eid) < (lead.at, lead.event_id):
                state.lead = Text(at, "created", event.lead_id)
    elif isinstance(event, DealStageChanged):
        from_stage = event.from_stage and intern(event.from_stage)
        entry = Entry(at, eid, intern(event.pipeline), intern(event.to_stage), from_stage, event.probability)
        state.entries = _inserted(state.entries, entry)
    elif isinstance(event, DealWon):
        won_in = event.currency and intern(event.currency)
        state.closes = _inserted(state.closes, Close(at, eid, intern(event.pipeline), WON, None, event.amount, won_in))
    elif isinstance(event, DealLost):
        state.closes = _inserted(state.closes, Close(at, eid, intern(event.pipeline), LOST, event.reason, None, None))
    elif isinstance(event, DealUpdated):
        if event.probability is not None:
            state.probs = _inserted(state.probs, Number(at, eid, event.probability))
        if event.expected_close is not None:
            state.expected_close = _newer(state.expected_close, Number(at, eid, event.expected_close.timestamp()))
    if not isinstance(event, (DealWon, DealLost)):
        amount: float | None = getattr(event, "amount", None)
        if amount is not None:
            state.amount = _newer(state.amount, Number(at, eid, amount))
        currency: str | None = getattr(event, "currency", None)
        if currency is not None:
            state.currency = _newer(state.currency, _text(at, eid, currency))
    if event.rep_id:
        state.owner = _newer(state.owner, _text(at, eid, event.rep_id))
    if event.team:
        state.team = _newer(state.team, _text(at, eid, event.team))
    if event.source:
        state.source = _newer(state.source, _text(at, eid, event.source))


def record_lead_event(state: PipelineLead, event: EventBase) -> None:
    """Fold one lead event into the family's own lead state."""
    at, eid = _stamp(state, event)
    if isinstance(event, LeadCreated):
        created = Stamp(at, eid)
        if _older(state.created, created) is created:
            state.created = created
            if event.source:
                state.source = _text(at, eid, event.source)
        if event.mql:
            state.mql = True
    elif isinstance(event, LeadQualified):
        state.mql = True
    elif isinstance(event, LeadConverted):
        state.converted = True
        if event.deal_id not in state.deals:
            state.set_deal(event.deal_id, None)
    elif isinstance(event, LeadDealClosed):
        state.set_deal(event.deal_id, _newer(state.deals.get(event.deal_id), Outcome(at, eid, intern(event.outcome.value))))
        return  # the worker's own link event: it says nothing of the lead's owner or team
    elif isinstance(event, CustomerChurned):
        state.churned = _older(state.churned, Churn(at, eid, event.rep_id and intern(event.rep_id)))
        return
    if event.rep_id and isinstance(event, (LeadCreated, LeadAssigned)):
        state.owner = _newer(state.owner, _text(at, eid, event.rep_id))
    if event.team and isinstance(event, (LeadCreated, LeadAssigned)):
        state.team = _newer(state.team, _text(at, eid, event.team))
