"""The ``lead_going_cold`` rule: a lead touched once and not touched again within N business days.

A touch is an outreach action on the lead: a call, an outbound activity, an email sent, a meeting
booked (the engagement family's per-lead state holds them all). N is configured per team
(``[alerts.lead_going_cold]``). The deadline is N business days after the first touch in the team's
business hours (``families.pipeline.stalls.business_days_after``); the clock is an ``EntityClocks``
entry per lead, armed at the first touch and ended at the second. A first touch processed after its
own deadline (a backfill, a replay) is history: it never pages.
"""

from __future__ import annotations

from collections.abc import Callable

from salespulse.families.business_hours import BusinessHours
from salespulse.families.engagement.state import Lead
from salespulse.families.entity_clocks import EntityClocks, iso
from salespulse.families.business_hours import business_days_after

RULE = "lead_going_cold"
UNKNOWN_SOURCE = "unknown"


def touches(lead: Lead) -> list[tuple[float, str, str]]:
    """The lead's outreach actions as (time, rep, team), oldest first."""
    out = [(touch.at, touch.rep, touch.team) for touch in lead.touches]
    out.extend(lead.sent_and_booked())
    out.sort()
    return out


class ColdRule:
    """Arms a lead's clock at its first touch and ends it at the second (or when the team has no rule)."""

    def __init__(self, clocks: EntityClocks, days_for: Callable[[str], float | None],
                 hours_of: Callable[[str], BusinessHours]) -> None:
        self.clocks = clocks
        self.days_for = days_for
        self.hours_of = hours_of

    def observe(self, partition: int, lead_id: str, lead: Lead, arrived: float) -> None:
        done = touches(lead)
        if not done:
            return
        first_at, rep, touch_team = done[0]
        team = lead.team or touch_team
        days = self.days_for(team)
        if len(done) > 1 or days is None:
            self.clocks.end(partition, lead_id, done[1][0] if len(done) > 1 else first_at)
            return
        deadline = business_days_after(self.hours_of(team), first_at, days)
        if deadline <= arrived:
            self.clocks.end(partition, lead_id, first_at)  # history: measured, never paged
            return
        fields = {"rep_id": rep, "team": team, "source": lead.source or UNKNOWN_SOURCE}
        self.clocks.arm(partition, lead_id, iso(first_at), first_at, deadline, fields, first_at)
