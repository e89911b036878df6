"""Stage conversion, pipeline, forecast and revenue: pure arithmetic over deal, lead and quota states.

Every metric is a *contribution* of one entity's state (a deal, a lead, a rep's quota for a month), so
that any change (a late stage change, a close arriving before its creation, a reopened deal) is applied
as ``contribution(new) - contribution(old)`` and the streaming result never depends on arrival order.

A **deal state** is built only from its events' own fields (``Deal``, ``families.pipeline.state``): its *timeline* is every
stage entry (``deal.created``, ``deal.stage_changed``) and close (``deal.won``, ``deal.lost``) sorted by
``(occurred_at, event_id)``; the latest one is where the deal is now. Windowed fields land at their own
instants: stage entries and transitions when they happened, time in a stage when the deal left it, a
close (and the sales cycle) at the close, ``deals_created`` and the close-rate cohort at the creation.
Open deals also count *now* (open pipeline count, amount and weighted amount), outside any window.

Formulas (docs/metrics.md; the seed arithmetic in ``formulas.py``, stage order in ``pipelines.py``): win rate = won / (won + lost) by close date; funnel step conversion =
entries into stage k+1 / entries into stage k; weighted pipeline = Σ amount × probability (the deal's
own probability for its current stage, else the stage default); close rate = deals created in the
window that are won / deals created in it; lead → opportunity = opportunities / leads, lead → customer =
customers / leads, MQL → customer = mql_customers / mql (leads by creation date); quota attainment = won
/ quota, quota gap = quota - won, coverage = open pipeline expected to close in the month / gap; leads
needed = (quota / average deal size) / lead → customer rate; productivity = revenue / reps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from salespulse.families.keys import decode, encode
from salespulse.families.pipeline.state import Close, Deal, Entry, PipelineLead, Quota
from salespulse.families.pipeline.formulas import weighted_amount
from salespulse.families.pipeline.pipelines import LOST, WON, Pipelines
from salespulse.outputs.derived import Histogram

UNASSIGNED = "unassigned"
UNKNOWN_SOURCE = "unknown"
OPEN = "open"
FIRST_YEAR_S = 365 * 86400.0
#: Time in a stage (stage scope) and sales cycle (deal scopes), 15 min to a year, as non-cumulative buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    900, 3600, 14400, 43200, 86400, 259200, 604800, 1209600, 2592000, 5184000, 7776000, 15552000, 31536000,
)
HISTOGRAMS: dict[str, Histogram] = {
    prefix: Histogram(f"{prefix}_", DURATION_BUCKETS, tuple((f"{prefix}_{q}_s", v) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))))
    for prefix in ("tis", "cycle")
}

# A windowed contribution key: (instant epoch, only this grain or None for every window, scope, id, field).
WindowKey = tuple[float, str | None, str, str, str]
NowKey = tuple[str, str, str]  # (scope, id, field)


def duration_bucket(prefix: str, seconds: float) -> str:
    """The bucket a duration falls in (``_le_86400`` holds (43200, 86400])."""
    return HISTOGRAMS[prefix].bucket(seconds)


# --- deal state -----------------------------------------------------------------------------------------


def timeline(deal: Deal) -> list[Entry | Close]:
    """Stage entries and closes merged in (time, event id) order."""
    if not deal.closes:
        return list(deal.entries)
    items: list[Entry | Close] = [*deal.entries, *deal.closes]
    items.sort(key=lambda item: (item.at, item.event_id))
    return items


@dataclass(frozen=True)
class DealView:
    """What a deal state says now: status, where, who, how much."""

    status: str  # open | won | lost | unknown (no entry or close yet)
    pipeline: str | None
    stage: str | None
    at: float | None  # when the current stage was entered, or when the deal closed
    rep: str
    team: str
    source: str
    amount: float | None
    currency: str
    probability: float
    reason: str | None


def view(deal: Deal, pipelines: Pipelines, default_currency: str, team_of_rep: Mapping[str, str]) -> DealView:
    """The deal's current status from its timeline, owner, amount and probability with fallbacks."""
    rep = deal.owner.value if deal.owner is not None else UNASSIGNED
    team = (deal.team.value if deal.team is not None else None) or team_of_rep.get(rep) or UNASSIGNED
    source = deal.source.value if deal.source is not None else UNKNOWN_SOURCE
    amount = deal.amount.value if deal.amount is not None else None
    currency = deal.currency.value if deal.currency is not None else default_currency
    last = _last(deal)
    if last is None:
        pipeline = deal.created.pipeline if deal.created is not None else None
        return DealView("unknown", pipeline, None, None, rep, team, source, amount, currency, 0.0, None)
    if isinstance(last, Close):
        won_amount = last.amount if last.amount is not None else amount
        won_currency = last.currency or currency
        status = last.outcome
        return DealView(status, last.pipeline, status, last.at, rep, team, source, won_amount, won_currency, 0.0, last.reason)
    pipeline, stage = last.pipeline, last.stage
    outcome = pipelines.closes_as(pipeline, stage)
    if outcome is not None:
        return DealView(outcome, pipeline, stage, last.at, rep, team, source, amount, currency, 0.0, None)
    probability = pipelines.default_probability(pipeline, stage)
    chosen = (last.at, last.event_id, last.probability) if last.probability is not None else None
    for at, eid, p in deal.probs:
        if at >= last.at and (chosen is None or (at, eid) >= chosen[:2]):
            chosen = (at, eid, p)
    if chosen is not None:
        probability = float(chosen[2])
    return DealView(OPEN, pipeline, stage, last.at, rep, team, source, amount, currency, probability, None)


def _last(deal: Deal) -> Entry | Close | None:
    """Where the deal is now: the latest of its entries and closes by (time, event id)."""
    entry = deal.entries[-1] if deal.entries else None
    close = deal.closes[-1] if deal.closes else None
    if entry is None or close is None:
        return entry or close
    return close if (close.at, close.event_id) > (entry.at, entry.event_id) else entry


def stage_scope(pipeline: str, stage: str) -> str:
    """The id of a stage's own scope: ``<pipeline>/<stage>`` (a ``/`` in the pipeline escaped, see ``keys``)."""
    return encode((pipeline, stage), sep="/")


def stage_parts(ident: str) -> tuple[str, str]:
    """``(pipeline, stage)`` of a stage scope id (the inverse of ``stage_scope``)."""
    pipeline, stage = decode(ident, 2, sep="/")
    return pipeline, stage


def transition_id(pipeline: str, from_stage: str, to_stage: str) -> str:
    """The id of a transition in the all-time ``transition`` scope (structured, for Prometheus)."""
    return encode((pipeline, from_stage, to_stage))


def deal_contribution(
    deal: Deal, pipelines: Pipelines, default_currency: str, team_of_rep: Mapping[str, str]
) -> tuple[dict[WindowKey, float], dict[NowKey, float]]:
    """A deal's windowed fields per (instant, grain, scope, id, field) and its *now* fields per (scope, id, field)."""
    v = view(deal, pipelines, default_currency, team_of_rep)
    windowed: dict[WindowKey, float] = {}
    owners = (("rep", v.rep), ("team", v.team), ("source", v.source))

    def put(at: float, scope: str, ident: str, name: str, value: float, grain: str | None = None) -> None:
        key = (at, grain, scope, ident, name)
        windowed[key] = windowed.get(key, 0) + value

    def deal_fields(at: float, pipeline: str, fields: Mapping[str, float]) -> None:
        for scope, ident in (*owners, ("pipeline", pipeline)):
            for name, value in fields.items():
                put(at, scope, ident, name, value)

    created = deal.created
    if created is not None:
        cohort = {"deals_created": 1.0}
        if v.status == WON:
            cohort["cohort_won"] = 1.0
        deal_fields(created.at, created.pipeline, cohort)
    previous: Entry | Close | None = None
    for item in timeline(deal):
        at = item.at
        if isinstance(item, Entry):
            pipeline, stage = item.pipeline, item.stage
            deal_fields(at, pipeline, {f"entries:{stage}": 1.0})
            put(at, "stage", stage_scope(pipeline, stage), "entries", 1.0)
            from_stage = item.from_stage
            if from_stage is None and previous is not None:
                # the previous entry's stage, or a reopened deal's outcome
                from_stage = previous.stage if isinstance(previous, Entry) else previous.outcome
            if from_stage is not None:
                put(at, "pipeline", pipeline, f"transition:{from_stage}>{stage}", 1.0)
                put(at, "transition", transition_id(pipeline, from_stage, stage), "n", 1.0)
            if isinstance(previous, Close):
                deal_fields(at, pipeline, {"reopened": 1.0})
        if isinstance(previous, Entry):
            duration = max(0.0, at - previous.at)
            ident = stage_scope(previous.pipeline, previous.stage)
            put(at, "stage", ident, "tis_count", 1.0)
            put(at, "stage", ident, "tis_sum_s", duration)
            put(at, "stage", ident, duration_bucket("tis", duration), 1.0)
        previous = item
    if v.status in (WON, LOST) and v.at is not None and v.pipeline is not None:
        if v.status == WON:
            fields: dict[str, float] = {"won": 1.0, f"won_amount:{v.currency}": float(v.amount or 0.0)}
            kind = created.kind if created is not None else None
            if kind in ("upsell", "cross_sell"):
                fields[f"won_{kind}"] = 1.0
            if created is not None:
                cycle = max(0.0, v.at - created.at)
                fields |= {"cycle_count": 1.0, "cycle_sum_s": cycle, duration_bucket("cycle", cycle): 1.0}
        else:
            fields = {"lost": 1.0, f"lost_reason:{pipelines.loss_reason(v.pipeline, v.reason)}": 1.0}
        deal_fields(v.at, v.pipeline, fields)
        for name in ("won", "lost", f"won_amount:{v.currency}"):
            if name in fields:  # Prometheus: deals_closed_total and revenue_won_total by pipeline and rep
                put(v.at, "pipeline_rep", encode((v.pipeline, v.rep)), name, fields[name])
    churned = deal.churned
    if churned is not None:
        won_at = v.at if v.status == WON else None
        churn_rep = churned.rep or v.rep
        churn_team = (team_of_rep.get(churn_rep) or v.team) if churned.rep else v.team
        for (scope, ident, name), value in churn_fields(churn_rep, churn_team, churned.at, won_at).items():
            put(churned.at, scope, ident, name, value)
    if v.status == OPEN and v.pipeline is not None and v.stage is not None and deal.expected_close is not None:
        amount = float(v.amount or 0.0)
        put(deal.expected_close.value, "rep", v.rep, f"open_closing:{v.currency}", amount, grain="month")
        put(deal.expected_close.value, "team", v.team, f"open_closing:{v.currency}", amount, grain="month")
    return windowed, open_fields(v)


def open_fields(v: DealView) -> dict[NowKey, float]:
    """An open deal's *now* fields per (scope, id, field): count, amount and weighted amount by pipeline, rep
    and team, and the Prometheus gauges' (pipeline, stage, currency) and per-team ids; none once closed."""
    now: dict[NowKey, float] = {}
    if v.status != OPEN or v.pipeline is None or v.stage is None:
        return now
    amount = float(v.amount or 0.0)
    weighted = weighted_amount(amount, v.probability)
    fields = {
        "deals": 1.0,
        f"deals:{v.stage}": 1.0,
        f"amount:{v.currency}": amount,
        f"amount:{v.stage}:{v.currency}": amount,
        f"weighted:{v.currency}": weighted,
    }
    for scope, ident in (("pipeline", v.pipeline), ("rep", v.rep), ("team", v.team)):
        for name, value in fields.items():
            now[(scope, ident, name)] = value
    gauge = open_gauge_id(v.pipeline, v.stage, v.currency)
    # The same per team, for boards that filter the open pipeline by team (Prometheus only, never published).
    team_gauge = encode((v.pipeline, v.stage, v.currency, v.team))
    for scope, ident in (("gauge", gauge), ("team_gauge", team_gauge)):
        now[(scope, ident, "deals")] = 1.0
        now[(scope, ident, "amount")] = amount
        now[(scope, ident, "weighted")] = weighted
    return now


def churn_fields(rep: str, team: str, churned_at: float, won_at: float | None) -> dict[tuple[str, str, str], float]:
    """A churned customer per rep and team: within its first year after the win, or later (if the win is known)."""
    fields = {"churned": 1.0}
    if won_at is not None:
        fields["churned_first_year" if churned_at - won_at < FIRST_YEAR_S else "churned_later"] = 1.0
    return {(scope, ident, name): value for scope, ident in (("rep", rep), ("team", team)) for name, value in fields.items()}


def open_gauge_id(pipeline: str, stage: str, currency: str) -> str:
    """Id of the Prometheus open-pipeline gauge scope: structured (pipeline, stage, currency)."""
    return encode((pipeline, stage, currency))


# --- lead and quota states ------------------------------------------------------------------------------


def lead_contribution(lead: PipelineLead, team_of_rep: Mapping[str, str]) -> dict[WindowKey, float]:
    """A lead's cohort fields at its creation (leads, mql, opportunities, customers, mql_customers) and its churn."""
    rep = lead.owner.value if lead.owner is not None else UNASSIGNED
    team = (lead.team.value if lead.team is not None else None) or team_of_rep.get(rep) or UNASSIGNED
    deals = lead.deals
    won_ats = [close.at for close in deals.values() if close is not None and close.outcome == WON]
    out: dict[WindowKey, float] = {}
    churned = lead.churned
    if churned is not None:
        churn_rep = churned.rep or rep
        churn_team = (team_of_rep.get(churn_rep) or team) if churned.rep else team
        won_at = min(won_ats) if won_ats else None
        for (scope, ident, name), value in churn_fields(churn_rep, churn_team, churned.at, won_at).items():
            out[(churned.at, None, scope, ident, name)] = value
    created = lead.created
    if created is None:
        return out
    source = lead.source.value if lead.source is not None else UNKNOWN_SOURCE
    customer = bool(won_ats)
    mql = lead.mql
    fields = {"leads": 1.0}
    if mql:
        fields["mql"] = 1.0
    if lead.converted or deals:
        fields["opportunities"] = 1.0
    if customer:
        fields["customers"] = 1.0
        if mql:
            fields["mql_customers"] = 1.0
    for scope, ident in (("rep", rep), ("team", team), ("source", source)):
        for name, value in fields.items():
            out[(created.at, None, scope, ident, name)] = value
    return out


def quota_contribution(
    quota: Quota, month_start: float, rep: str, team_of_rep: Mapping[str, str], default_currency: str
) -> dict[WindowKey, float]:
    """A rep's quota for a month (the latest ``quota.set``), in the month window only (rep and team scopes)."""
    value = quota.value
    if value is None:
        return {}
    team = value[4] or team_of_rep.get(rep) or UNASSIGNED
    name = f"quota:{value[3] or default_currency}"
    return {
        (month_start, "month", "rep", rep, name): float(value[2]),
        (month_start, "month", "team", team, name): float(value[2]),
    }


def window_change(
    old: Mapping[WindowKey, float], new: Mapping[WindowKey, float]
) -> dict[tuple[float, str | None], list[tuple[str, str, dict[str, float]]]]:
    """``new - old`` grouped by (instant, grain) as deltas ``(scope, id, {field: change})``; unchanged left out."""
    grouped: dict[tuple[float, str | None], dict[tuple[str, str], dict[str, float]]] = {}
    for key in old.keys() | new.keys():
        change = new.get(key, 0) - old.get(key, 0)
        if change:
            grouped.setdefault((key[0], key[1]), {}).setdefault((key[2], key[3]), {})[key[4]] = change
    return {
        instant: [(scope, ident, fields) for (scope, ident), fields in by_id.items()]
        for instant, by_id in grouped.items()
    }
