"""The pipeline family from the worker's context."""

from __future__ import annotations

from salespulse.families.context import FamilyContext
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.spec import SPEC

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> PipelineFamily:
    config = ctx.config
    return PipelineFamily(
        ctx.cells("pipeline"),
        ctx.states("pstate"),
        ctx.tz,
        ctx.retention_s,
        pipelines=config.pipeline_specs(),
        currency=config.currency,
        team_of_rep=config.team_of_rep,
        config_quotas=config.quotas,
    )
