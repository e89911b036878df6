"""The pipeline family from the worker's context."""

from __future__ import annotations

from salespulse.families.context import FamilyContext
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.spec import SPEC

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> PipelineFamily:
    c = ctx.config
    return PipelineFamily(
        ctx.cells("pipeline"), ctx.states("pstate"), ctx.tz, ctx.retention_s,
        pipelines=c.pipeline_specs(), currency=c.currency, team_of_rep=c.team_of_rep, config_quotas=c.quotas,
    )
