"""The ``deal_stalled`` rule: an open deal still in a stage N business days after it entered it.

N is configured per pipeline and stage (``[pipelines.<name>] stalled_after_days``). The deadline is a
pure function of the stage entry and the deal team's business hours; the clock itself is an
``EntityClocks`` entry per deal, armed at each stage entry and ended when the deal moves or closes.
A stage entry processed after its own deadline (a backfill, a replay) is history: it never pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from salespulse.families.business_hours import BusinessHours, business_days_after
from salespulse.families.entity_clocks import EntityClocks, iso
from salespulse.families.pipeline.rules import OPEN, DealView

RULE = "deal_stalled"
#: Team -> its business hours.
HoursOf = Callable[[str], BusinessHours]


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
        fields = {"pipeline": deal.pipeline or "", "stage": deal.stage or "", "rep_id": deal.rep, "team": deal.team,
                  "source": deal.source}  # an open deal with a configured stage has both
        self.clocks.arm(partition, deal_id, iso(deal.at), deal.at, deadline, fields, deal.at)
