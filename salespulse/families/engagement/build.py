"""The engagement family from the worker's context."""

from __future__ import annotations

from salespulse.families.context import FamilyContext
from salespulse.families.engagement.cold import RULE, ColdRule
from salespulse.families.engagement.family import EngagementFamily
from salespulse.families.engagement.spec import SPEC
from salespulse.families.engagement.state import OUTREACH_CODEC
from salespulse.families.entity_clocks import CLOCK_CELLS, EntityClocks

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> EngagementFamily:
    c = ctx.config
    targets = c.targets_for if c.targets.configured else None
    quiet_s, outbound = c.activity.quiet_after_days * 86400, c.lead_response.outbound_activity_kinds
    going_cold = c.alerts.lead_going_cold
    cold = ColdRule(EntityClocks(ctx.states("ecold", CLOCK_CELLS), RULE, "lead_id"), going_cold.days_for, c.business_hours_for) \
        if going_cold.enabled else None
    return EngagementFamily(
        ctx.cells("engagement"), ctx.states("outreach", OUTREACH_CODEC), ctx.tz, ctx.retention_s,
        quiet_s=quiet_s, team_of_rep=c.team_of_rep, outbound_kinds=outbound, targets=targets, cold=cold,
    )
