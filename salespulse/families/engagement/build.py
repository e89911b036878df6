"""The engagement family from the worker's context."""

from __future__ import annotations

from salespulse.families.context import FamilyContext
from salespulse.families.engagement.family import EngagementFamily
from salespulse.families.engagement.spec import SPEC

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> EngagementFamily:
    config = ctx.config
    return EngagementFamily(
        ctx.cells("engagement"),
        ctx.states("outreach"),
        ctx.tz,
        ctx.retention_s,
        quiet_s=config.activity.quiet_after_days * 86400,
        team_of_rep=config.team_of_rep,
        outbound_kinds=config.lead_response.outbound_activity_kinds,
        targets=config.targets_for if config.targets.configured else None,
    )
