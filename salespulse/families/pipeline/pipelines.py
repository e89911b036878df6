"""Pipelines as configured: stage order, won and lost stages, default probabilities, loss reasons.

Stage order comes from the config or the CRM, never from the names: a transition between stages the
order does not place is ``unknown``, not a guess (docs/crm.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

WON, LOST = "won", "lost"
OTHER_REASON = "other"
NO_REASON = "unspecified"
#: ``direction`` label values of stage transitions.
FORWARD, BACKWARD, UNKNOWN_DIRECTION = "forward", "backward", "unknown"
#: Default loss reasons (after normalisation) kept as their own label; any other reason counts as ``other``.
DEFAULT_LOSS_REASONS: tuple[str, ...] = (
    "price", "competitor", "no_budget", "timing", "no_decision", "unresponsive", "product_fit", "lost_contact",
)
_REASON_CHARS = re.compile(r"[^a-z0-9_]+")
_REASON_CHARS = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class PipelineSpec:
    """One configured pipeline: open stages in order, won and lost stages, default probabilities."""

    stages: tuple[str, ...]
    won_stages: tuple[str, ...] = ()
    lost_stages: tuple[str, ...] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    loss_reasons: tuple[str, ...] = DEFAULT_LOSS_REASONS

    @property
    def order(self) -> tuple[str, ...]:
        """Every known stage in rank order: open stages, then won, then lost."""
        return (*self.stages, *self.won_stages, *self.lost_stages)


#: The pipeline used when the config names none (the one ``salespulse simulate`` drives).
DEFAULT_PIPELINES: Mapping[str, PipelineSpec] = {
    "default": PipelineSpec(
        stages=("qualification", "discovery", "proposal", "negotiation"),
        won_stages=("closed_won",),
        lost_stages=("closed_lost",),
        probabilities={"qualification": 0.10, "discovery": 0.25, "proposal": 0.50, "negotiation": 0.75},
    )
}


class Pipelines:
    """Stage order, won/lost stages, default probabilities and loss reasons of every configured pipeline.

    A pipeline or stage the config does not know is accepted: its stages rank after the known ones
    (alphabetically among themselves), its default probability is 0 and any reason is kept as normalised.
    """

    def __init__(self, specs: Mapping[str, PipelineSpec] | None = None) -> None:
        self.specs: dict[str, PipelineSpec] = dict(specs or {})
        self._rank = {name: {stage: i for i, stage in enumerate(spec.order)} for name, spec in self.specs.items()}

    def knows(self, pipeline: str, stage: str) -> bool:
        """True if the config names this stage of this pipeline."""
        return stage in self._rank.get(pipeline, {})

    def rank(self, pipeline: str, stage: str) -> tuple[int, str]:
        """A sort key: configured position, unknown stages after every known one (then by name)."""
        ranks = self._rank.get(pipeline, {})
        found = ranks.get(stage)
        return (found, "") if found is not None else (len(ranks), stage)

    def direction(self, pipeline: str, from_stage: str, to_stage: str) -> str:
        """``forward`` / ``backward`` by the configured order (config or the CRM's own, see docs/crm.md);
        ``backward`` when a closed deal reopens (from its outcome ``won`` / ``lost``); ``unknown`` when the
        order does not place both stages (never a guess by name)."""
        ranks = self._rank.get(pipeline, {})
        if from_stage in (WON, LOST) and from_stage not in ranks:
            return BACKWARD
        if from_stage not in ranks or to_stage not in ranks:
            return UNKNOWN_DIRECTION
        return BACKWARD if ranks[to_stage] < ranks[from_stage] else FORWARD

    def closes_as(self, pipeline: str, stage: str) -> str | None:
        """``won`` / ``lost`` when entering this stage closes the deal, else None."""
        spec = self.specs.get(pipeline)
        if spec is None:
            return None
        if stage in spec.won_stages:
            return WON
        if stage in spec.lost_stages:
            return LOST
        return None

    def default_probability(self, pipeline: str, stage: str) -> float:
        """The configured probability of a stage (0 when unknown)."""
        spec = self.specs.get(pipeline)
        return float(spec.probabilities.get(stage, 0.0)) if spec is not None else 0.0

    def loss_reason(self, pipeline: str, reason: str | None) -> str:
        """A free-text loss reason as a bounded label: normalised, and ``other`` unless a known reason."""
        if not reason:
            return NO_REASON
        normalised = _REASON_CHARS.sub("_", reason.strip().lower()).strip("_")[:40]
        spec = self.specs.get(pipeline)
        known = spec.loss_reasons if spec is not None else DEFAULT_LOSS_REASONS
        return normalised if normalised in known else OTHER_REASON

    def funnel(self, pipeline: str) -> tuple[str, ...]:
        """The open stages of a pipeline in order (the funnel steps), empty if unknown."""
        spec = self.specs.get(pipeline)
        return spec.stages if spec is not None else ()
