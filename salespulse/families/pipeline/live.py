"""Values of the pipeline's live series (declared in ``spec.py``): what no scope holds, because they need the
configured stage order, the open deals *now* (not a window) or the quota states."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from salespulse.outputs.derived import Number

if TYPE_CHECKING:
    from salespulse.families.pipeline.family import PipelineFamily

Malformed = Callable[[str], None]
Values = dict[tuple[str, ...], Number]


def transitions(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    """Stage changes per (pipeline, from, to) with their direction in the configured order."""
    out: Values = {}
    for (pipeline, from_stage, to_stage), fields in family.all_time_keyed(owned, "transition", malformed).items():
        if fields.get("n"):
            out[(pipeline, from_stage, to_stage, family.pipelines.direction(pipeline, from_stage, to_stage))] = fields["n"]
    return out


def _open(family: PipelineFamily, owned: list[int], malformed: Malformed, field: str,
          key: Callable[[str, str, str], tuple[str, ...]]) -> Values:
    out: Values = {}
    for (pipeline, stage, currency), fields in family.open_totals_keyed(owned, "gauge", malformed).items():
        labels = key(pipeline, stage, currency)
        out[labels] = out.get(labels, 0) + fields.get(field, 0)
    return out


def open_deals(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return _open(family, owned, malformed, "deals", lambda pipeline, stage, _currency: (pipeline, stage))


def open_amount(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return _open(family, owned, malformed, "amount", lambda pipeline, stage, currency: (pipeline, stage, currency))


def weighted_amount(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return _open(family, owned, malformed, "weighted", lambda pipeline, _stage, currency: (pipeline, currency))


def quotas(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return {labels: amount for labels, amount in family.quotas(owned).items()}


def _this_month(family: PipelineFamily, owned: list[int], now: float, kind: str) -> Values:
    """Won amount (``won_amount``) or quota (``quota``) per (rep, currency) in the calendar month of now.

    A rep's quota lives in the rep's partition and the rep's won deals in many deal partitions, so no
    worker can divide them: the won amount is a partial (``sum by (rep)`` over workers), the quota is whole
    where it is exported (``max by (rep)``); attainment is the first over the second.
    """
    out: Values = {}
    for rep, fields in family.current_window(owned, "rep", "month", now).items():
        for name, value in fields.items():
            field, _, currency = name.partition(":")
            if field == kind and (fields.get("won") if kind == "won_amount" else value):
                out[(rep, currency)] = value
    return out


def month_won(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return _this_month(family, owned, now, "won_amount")


def month_quota(family: PipelineFamily, owned: list[int], now: float, malformed: Malformed) -> Values:
    return _this_month(family, owned, now, "quota")
