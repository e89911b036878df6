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

from collections.abc import Mapping, Sequence

from salespulse.families.keys import encode
from salespulse.families.lead_response.state import Lead
from salespulse.outputs.derived import Histogram

UNASSIGNED = "unassigned"
UNKNOWN_SOURCE = "unknown"
#: Response times (business seconds) as non-cumulative bucket counts ``le_<seconds>`` ... ``le_inf``; the
#: bounds resolve the 5-minute rule and the day.
RESPONSE_TIMES = Histogram(
    prefix="",
    bounds=(15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
    quantiles=(("p50_s", 0.5), ("p90_s", 0.9), ("p99_s", 0.99)),
)
RESPONSE_BUCKETS: tuple[float, ...] = RESPONSE_TIMES.bounds
BUCKET_FIELDS: tuple[str, ...] = RESPONSE_TIMES.fields
bucket_field = RESPONSE_TIMES.bucket  # ``le_300`` holds (180, 300]


def quantile(fields: Mapping[str, float], q: float) -> float | None:
    """The q-quantile of response times from the bucket counts, interpolating within a bucket."""
    return RESPONSE_TIMES.quantile(fields, q)


def responsible_rep(lead: Lead) -> str:
    """Who a lead's numbers are credited to: the owner at first touch, else the current owner."""
    return lead.touch_owner or lead.owner or UNASSIGNED


def contribution(lead: Lead) -> dict[tuple[str, str, str], float]:
    """A lead's additive fields per (scope, id, field); empty until its creation is known.

    Of the lead (``families.lead_response.state``): ``created``, ``deadline``, ``touch`` (the first touch
    or None), ``response_s`` (business seconds, set with ``touch``), ``owner``, ``touch_owner``, ``team``
    and ``source``.
    """
    if lead.created is None:
        return {}
    fields: dict[str, float] = {"created": 1}
    touch = lead.touch
    if touch is not None:
        response = float(lead.response_s or 0.0)
        fields["touched"] = 1
        fields["response_sum_s"] = response
        fields[bucket_field(response)] = 1
        fields["within_sla" if lead.deadline is not None and touch <= lead.deadline else "late"] = 1
    rep = responsible_rep(lead)
    team = lead.team or UNASSIGNED
    source = lead.source or UNKNOWN_SOURCE
    out: dict[tuple[str, str, str], float] = {}
    for scope, ident in (
        ("rep", rep),
        ("team", team),
        ("source", source),
        ("team_source", encode((team, source))),
        ("team_rep", encode((team, rep))),
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


def batch_recompute(leads: Sequence[Lead]) -> dict[tuple[str, str], dict[str, float]]:
    """Reference: all-time additive fields per (scope, id) over final lead states (for tests)."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for lead in leads:
        for (scope, ident, field), value in contribution(lead).items():
            fields = totals.setdefault((scope, ident), {})
            fields[field] = fields.get(field, 0) + value
    return totals
