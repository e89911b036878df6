"""The activity family from the worker's context."""

from __future__ import annotations

from salespulse.families.activity.family import ActivityFamily
from salespulse.families.activity.idle import RULE, IdleRule
from salespulse.families.activity.spec import SPEC
from salespulse.families.context import FamilyContext
from salespulse.families.entity_clocks import CLOCK_CELLS, EntityClocks

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> ActivityFamily:
    config = ctx.config
    rule = config.alerts.rep_no_activity
    idle = IdleRule(
        EntityClocks(ctx.states("ridle", CLOCK_CELLS), RULE, "rep_id"), config.team_of_rep, rule.by_for, config.business_hours_for,
        ctx.partitions, config.lead_response.outbound_activity_kinds,
    ) if rule.enabled else None
    return ActivityFamily(
        ctx.cells("activity"),
        ctx.tz,
        ctx.retention_s,
        team_of_rep=config.team_of_rep,
        targets=config.targets_for if config.targets.configured else None,
        foreign_target_kinds=ctx.foreign_target_kinds,
        idle=idle,
    )
