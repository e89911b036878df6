"""The lead-response family from the worker's context: the SLA clock runs in each team's business hours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from salespulse.config import Config
from salespulse.families.business_hours import add_business_seconds, business_seconds_between
from salespulse.families.context import FamilyContext
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.spec import SPEC

__all__ = ["SPEC", "build"]


def build(ctx: FamilyContext) -> LeadResponseFamily:
    config = ctx.config
    sla_s = config.lead_response.effective_sla_seconds(int(ctx.sla_s))
    return LeadResponseFamily(
        ctx.cells("response"),
        ctx.states("leads", LEAD_CODEC),
        ctx.tz,
        ctx.retention_s,
        sla_s=sla_s,
        deadline_of=deadline_function(config, sla_s),
        business_seconds=business_seconds_function(config),
        outbound_kinds=config.lead_response.outbound_activity_kinds,
        warn_of=warning_function(config, sla_s),
    )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def warning_function(config: Config, sla_s: float) -> Callable[[float, str], float] | None:
    """The pre-breach warning's instant: ``warn_fraction`` of the SLA in business time; None when 0 (off)."""
    fraction = config.lead_response.warn_fraction
    return deadline_function(config, sla_s * fraction) if fraction > 0 else None


def deadline_function(config: Config, sla_s: float) -> Callable[[float, str], float]:
    """A lead's first-touch deadline: creation + SLA in its team's business hours."""

    def deadline_of(created: float, team: str) -> float:
        hours = config.business_hours_for(team)
        if hours.is_always_open:
            return created + sla_s
        return add_business_seconds(hours, _utc(created), sla_s).timestamp()

    return deadline_of


def business_seconds_function(config: Config) -> Callable[[float, float, str], float]:
    """Open seconds between two instants in a team's business hours (plain seconds around the clock)."""

    def business_seconds(start: float, end: float, team: str) -> float:
        hours = config.business_hours_for(team)
        if hours.is_always_open or end <= start:
            return max(0.0, end - start)
        return business_seconds_between(hours, _utc(start), _utc(end))

    return business_seconds
