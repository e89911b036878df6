"""The activity family from the worker's context."""

from __future__ import annotations

from salespulse.families.activity.family import ActivityFamily
from salespulse.families.activity.spec import SPEC
from salespulse.families.context import FamilyContext

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> ActivityFamily:
    config = ctx.config
    return ActivityFamily(
        ctx.cells("activity"),
        ctx.tz,
        ctx.retention_s,
        team_of_rep=config.team_of_rep,
        targets=config.targets_for if config.targets.configured else None,
        foreign_target_kinds=ctx.foreign_target_kinds,
    )
