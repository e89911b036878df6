"""The ``deal_stalled`` rule: an open deal still in a stage N business days after it entered it.

N is configured per pipeline and stage (``[pipelines.<name>] stalled_after_days``). The deadline is a
pure function of the stage entry and the deal team's business hours; the clock itself is an
``EntityClocks`` entry per deal, armed at each stage entry and ended when the deal moves or closes.
A stage entry processed after its own deadline (a backfill, a replay) is history: it never pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone

from salespulse.families.business_hours import BusinessHours, add_business_seconds
from salespulse.families.entity_clocks import EntityClocks, iso
from salespulse.families.pipeline.rules import OPEN, DealView

RULE = "deal_stalled"
#: Team -> its business hours.
HoursOf = Callable[[str], BusinessHours]


def business_days_after(hours: BusinessHours, start: float, days: float) -> float:
    """``days`` business days after ``start``: the same local time that many open days later (days with no
    opening hours, weekends and holidays, are skipped; a fraction counts as that share of 24 hours), or the
    next opening when that instant is closed. Around the clock it is ``start + days × 24 h``."""
    if hours.is_always_open:
        return start + days * 86400.0
    whole, fraction = int(days), days - int(days)
    local = datetime.fromtimestamp(start, timezone.utc).astimezone(hours.tz)
    counted = 0
    while counted < whole:
        local += timedelta(days=1)  # aware arithmetic keeps the wall time across a DST change
        if hours.open_intervals(local.date()):
            counted += 1
    at = local.astimezone(timezone.utc) + timedelta(seconds=fraction * 86400.0)
    return add_business_seconds(hours, at, 1e-6).timestamp() - 1e-6


class StallRule:
    """Arms, moves and ends each deal's stall clock from the deal's view after every deal event."""

    def __init__(self, clocks: EntityClocks, after_days: Mapping[str, Mapping[str, float]], hours_of: HoursOf) -> None:
        self.clocks = clocks
        #: pipeline -> stage -> business days
        self.after_days = after_days
        self.hours_of = hours_of

    def observe(self, partition: int, deal_id: str, deal: DealView, arrived: float) -> None:
        days = self.after_days.get(deal.pipeline or "", {}).get(deal.stage or "")
        if deal.status != OPEN or deal.at is None or days is None:
            self.clocks.end(partition, deal_id, arrived if deal.at is None else max(deal.at, 0.0))
            return
        deadline = business_days_after(self.hours_of(deal.team), deal.at, days)
        if deadline <= arrived:
            self.clocks.end(partition, deal_id, deal.at)  # history: measured, never paged
            return
        fields = {"pipeline": deal.pipeline, "stage": deal.stage, "rep_id": deal.rep, "team": deal.team,
                  "source": deal.source}
        self.clocks.arm(partition, deal_id, iso(deal.at), deal.at, deadline, fields, deal.at)
