from salespulse.families.context import FamilyContext
from tests.unit.example_family.family import MeetingsFamily
from tests.unit.example_family.spec import SPEC

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> MeetingsFamily:
    return MeetingsFamily(ctx.cells("meetings"), ctx.tz, ctx.retention_s)
