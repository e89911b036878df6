"""Lead response: first touch, response time, SLA, and each lead's contribution to the aggregates.

- **First touch**: the earliest outbound touch by a rep (``call.logged``, ``email.sent``,
  ``meeting.booked``, or an ``activity.logged`` that is ``outbound`` or of a configured outbound kind).
  Inbound signals (opens, replies) are not touches.
- **Response time** = first touch - creation, floored at 0, in business seconds when the team has
  business hours (around the clock by default).
- **Within SLA**: first touch at or before the deadline (creation + SLA in business time).
- **Contact coverage** = touched / created. **Within-SLA rate** = within_sla / created.
- Credited to the lead's owner at the first touch (``unassigned`` if none), its team and its source.

A lead's contribution to the windowed aggregates is a pure function of its state, so any state
change (a touch arriving before its ``lead.created``, an earlier touch arriving late, a
reassignment) is applied as ``contribution(new) - contribution(old)``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from salespulse.metrics.composite import join_id
from salespulse.models.events import ActivityLogged, CallLogged, EmailSent, MeetingBooked

UNASSIGNED = "unassigned"
UNKNOWN_SOURCE = "unknown"
#: Upper bounds (seconds) of the response-time buckets; they resolve the 5-minute rule and the day.
RESPONSE_BUCKETS: tuple[float, ...] = (
    15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800,
)
BUCKET_FIELDS: tuple[str, ...] = tuple(f"le_{int(b)}" for b in RESPONSE_BUCKETS) + ("le_inf",)
#: Additive fields of a scope id in a window (partials sum field by field).
ADDITIVE_FIELDS: tuple[str, ...] = ("created", "touched", "within_sla", "late", "response_sum_s", *BUCKET_FIELDS)
QUANTILES: dict[str, float] = {"p50_s": 0.5, "p90_s": 0.9, "p99_s": 0.99}

LeadState = dict[str, Any]


def is_touch(event: object, outbound_kinds: frozenset[str] = frozenset()) -> bool:
    """True if the event is an outbound touch of a lead by a rep."""
    if isinstance(event, (CallLogged, EmailSent, MeetingBooked)):
        return True
    if isinstance(event, ActivityLogged):
        return bool(event.outbound) or event.kind.strip().lower() in outbound_kinds
    return False


def bucket_field(response_s: float) -> str:
    """The histogram field a response time falls in (``le_300`` holds (180, 300])."""
    index = bisect.bisect_left(RESPONSE_BUCKETS, response_s)
    return BUCKET_FIELDS[index]


def responsible_rep(lead: LeadState) -> str:
    """Who a lead's numbers are credited to: the owner at first touch, else the current owner."""
    return lead.get("touch_owner") or lead.get("owner") or UNASSIGNED


def contribution(lead: LeadState) -> dict[tuple[str, str, str], float]:
    """A lead's additive fields per (scope, id, field); empty until its creation is known.

    ``lead`` holds ``created`` (epoch), ``deadline`` (epoch), ``touch`` (epoch of first touch or
    None), ``response_s`` (business seconds, set with ``touch``), ``owner``, ``touch_owner``,
    ``team`` and ``source``.
    """
    if lead.get("created") is None:
        return {}
    fields: dict[str, float] = {"created": 1}
    if lead.get("touch") is not None:
        response = float(lead["response_s"])
        fields["touched"] = 1
        fields["response_sum_s"] = response
        fields[bucket_field(response)] = 1
        fields["within_sla" if lead["touch"] <= lead["deadline"] else "late"] = 1
    rep = responsible_rep(lead)
    team = lead.get("team") or UNASSIGNED
    source = lead.get("source") or UNKNOWN_SOURCE
    out: dict[tuple[str, str, str], float] = {}
    for scope, ident in (
        ("rep", rep),
        ("team", team),
        ("source", source),
        ("team_source", join_id(team, source)),
        ("team_rep", join_id(team, rep)),
    ):
        for field, value in fields.items():
            out[(scope, ident, field)] = value
    return out


def contribution_change(
    old: Mapping[tuple[str, str, str], float], new: Mapping[tuple[str, str, str], float]
) -> list[tuple[str, str, dict[str, float]]]:
    """``new - old`` as deltas ``(scope, id, {field: change})``, leaving out what did not change."""
    grouped: dict[tuple[str, str], dict[str, float]] = {}
    get_old = old.get
    for key, value in new.items():
        change = value - get_old(key, 0)
        if change:
            grouped.setdefault((key[0], key[1]), {})[key[2]] = change
    for key, value in old.items():
        if value and key not in new:
            grouped.setdefault((key[0], key[1]), {})[key[2]] = -value
    return [(scope, ident, fields) for (scope, ident), fields in grouped.items()]


def quantile(fields: Mapping[str, float], q: float) -> float | None:
    """The q-quantile of response times from the bucket counts, interpolating within a bucket."""
    total = sum(fields.get(name, 0) for name in BUCKET_FIELDS)
    if total <= 0:
        return None
    target = q * total
    seen = 0.0
    lower = 0.0
    for name, upper in zip(BUCKET_FIELDS, (*RESPONSE_BUCKETS, None)):
        count = fields.get(name, 0)
        if count and seen + count >= target:
            if upper is None:
                return lower  # beyond the last bound: report the bound, never invent a value
            return lower + (upper - lower) * (target - seen) / count
        seen += count
        if upper is not None:
            lower = upper
    return lower


def derived_fields(fields: Mapping[str, float]) -> dict[str, float]:
    """Rates, mean and quantiles of a (merged) set of additive fields; absent when undefined."""
    out: dict[str, float] = {}
    created = fields.get("created", 0)
    touched = fields.get("touched", 0)
    if created:
        out["within_sla_rate"] = fields.get("within_sla", 0) / created
        out["contact_coverage"] = touched / created
    if touched:
        out["avg_response_s"] = fields.get("response_sum_s", 0) / touched
        for name, q in QUANTILES.items():
            value = quantile(fields, q)
            if value is not None:
                out[name] = value
    return out


def batch_recompute(leads: Sequence[LeadState]) -> dict[tuple[str, str], dict[str, float]]:
    """Reference: all-time additive fields per (scope, id) over final lead states (for tests)."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for lead in leads:
        for (scope, ident, field), value in contribution(lead).items():
            fields = totals.setdefault((scope, ident), {})
            fields[field] = fields.get(field, 0) + value
    return totals


def redis_derived_spec() -> dict[str, Any]:
    """How Redis derives rates and quantiles from merged totals (mirrors ``derived_fields``)."""
    return {
        "ratios": [
            ["within_sla_rate", "within_sla", "created"],
            ["contact_coverage", "touched", "created"],
            ["avg_response_s", "response_sum_s", "touched"],
        ],
        "quantiles": [[name, q] for name, q in QUANTILES.items()],
        "buckets": [[name, bound] for name, bound in zip(BUCKET_FIELDS, (*RESPONSE_BUCKETS, -1))],
    }
