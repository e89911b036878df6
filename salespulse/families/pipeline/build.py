"""The pipeline family from the worker's context."""

from __future__ import annotations

from salespulse.families.context import FamilyContext
from salespulse.families.entity_clocks import CLOCK_CELLS, EntityClocks
from salespulse.families.pipeline.state import PIPELINE_CODEC
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.spec import SPEC
from salespulse.families.pipeline.stalls import RULE, StallRule

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> PipelineFamily:
    c = ctx.config
    after_days = {name: dict(p.stalled_after_days) for name, p in c.pipelines.items() if p.stalled_after_days}
    stalls = StallRule(EntityClocks(ctx.states("pstall", CLOCK_CELLS), RULE, "deal_id"), after_days, c.business_hours_for) if after_days else None
    return PipelineFamily(
        ctx.cells("pipeline"), ctx.states("pstate", PIPELINE_CODEC), ctx.tz, ctx.retention_s,
        pipelines=c.pipeline_specs(), currency=c.currency, team_of_rep=c.team_of_rep, config_quotas=c.quotas,
        stalls=stalls,
    )
