"""Values of the lead-response family's live series (declared in ``spec.py``): waiting leads, SLA breaches
and the SLA itself, read from the lead states rather than from a scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from salespulse.outputs.derived import Number

if TYPE_CHECKING:
    from salespulse.families.lead_response.family import LeadResponseFamily

Malformed = Callable[[str], None]
Values = dict[tuple[str, ...], Number]


def awaiting(family: LeadResponseFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return {(team,): count for team, (count, _) in family.awaiting_by_team(owned, now).items()}


def oldest_age(family: LeadResponseFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return {(team,): age for team, (_, age) in family.awaiting_by_team(owned, now).items()}


def breaches(family: LeadResponseFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return {labels: count for labels, count in family.breaches(owned, now, malformed).items()}


def sla(family: LeadResponseFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return {(): family.sla_s}
