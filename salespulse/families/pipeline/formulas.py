"""The pipeline family's seed formulas (docs/metrics.md): pure arithmetic on summed fields."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def win_rate(won: float, lost: float) -> float | None:
    """Closed-won / (closed-won + closed-lost); seed 001: 5 won, 25 lost → 5/30."""
    return ratio(won, won + lost)


def weighted_amount(amount: float, probability: float) -> float:
    """One open deal's contribution to the forecast; seed 003: $27,600 at 12 % → $3,312."""
    return amount * probability


def step_conversions(entries: Sequence[float]) -> list[float | None]:
    """Funnel step conversions: entries into stage k+1 / entries into stage k, for each k."""
    return [ratio(entries[k + 1], entries[k]) for k in range(len(entries) - 1)]


def quota_attainment(won: float, quota: float) -> float | None:
    """Won amount in the period / quota."""
    return ratio(won, quota)


def quota_gap(quota: float, won: float) -> float:
    """What is left to reach the quota (negative when above it)."""
    return quota - won


def pipeline_coverage(open_closing: float, quota: float, won: float) -> float | None:
    """Open pipeline expected to close in the period / remaining quota (None once the quota is met)."""
    return ratio(open_closing, quota - won)


def leads_needed(quota: float, average_deal: float, lead_to_customer: float) -> float | None:
    """(quota / average deal size) / lead→customer rate; seed 001: 100,000 / 5,000 / 0.10 → 200."""
    if average_deal <= 0 or lead_to_customer <= 0:
        return None
    return quota / average_deal / lead_to_customer


def share_at_quota(attainments: Iterable[float]) -> float | None:
    """Share of reps whose attainment is at or above 1."""
    values = list(attainments)
    return ratio(sum(1 for a in values if a >= 1), len(values))


def sales_productivity(revenue: float, reps: int) -> float | None:
    """Revenue / number of reps (seed 003)."""
    return ratio(revenue, reps)
