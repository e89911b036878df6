"""Metric records of the ``salespulse.metrics.<family>`` topics: one pydantic model per family, built from its spec.

A record is one partition's absolute value of one aggregate (scope, id, window), keyed
``<scope>:<id>:<window>:p<partition>`` so compaction keeps the latest value per partial; a subscriber's
total is the sum of the latest record of every partition. The models' JSON Schemas ship in ``schemas/metrics/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

_CALENDAR = r"day:\d{4}-\d{2}-\d{2}|week:\d{4}-W\d{2}|month:\d{4}-\d{2}"


@dataclass(frozen=True)
class RecordSpec:
    """What a family's record documents beyond the shared shape (the JSON Schema's words)."""

    model_name: str
    doc: str
    counts_type: type[int] | type[float] = float
    counts_doc: str | None = None
    id_doc: str | None = None
    window_doc: str | None = None
    partition_doc: str | None = None
    watermark_doc: str | None = None
    #: A rep's configured targets ride along (``targets``, not additive).
    targets_doc: str | None = None
    #: A rep's record carries its team's fields (``team``, ``team_counts``).
    team_beside: bool = False


def window_pattern(rolling: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The regular expression of a family's published window names."""
    fixed = "|".join(("all", *extra))
    return rf"^({fixed}|{_CALENDAR}|rolling:{_alternatives(rolling)})$"


def _alternatives(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"({'|'.join(names)})"


def _described(annotation: Any, doc: str | None, **constraints: Any) -> tuple[Any, Any]:
    if doc is None and not constraints:
        return (annotation, ...)
    return (annotation, Field(description=doc, **constraints))


def record_model(family: str, scopes: Sequence[str], window_regex: str, spec: RecordSpec) -> type[BaseModel]:
    """The pydantic model of a family's metric record (``extra`` forbidden: the schema is the contract)."""
    fields: dict[str, Any] = {
        "family": (Literal[family], ...),
        "scope": (Literal[tuple(scopes)], ...),
        "id": _described(str, spec.id_doc),
        "window": _described(str, spec.window_doc, pattern=window_regex),
        "partition": _described(int, spec.partition_doc, ge=0),
        "watermark": _described(int, spec.watermark_doc, ge=-1),
        "counts": _described(dict[str, int] if spec.counts_type is int else dict[str, float], spec.counts_doc),
    }
    if spec.targets_doc is not None:
        fields["targets"] = (dict[str, int] | None, Field(None, description=spec.targets_doc))
    if spec.team_beside:
        fields["team"] = (str | None, Field(None, description="for a rep: the team whose fields are in team_counts"))
        fields["team_counts"] = (
            dict[str, float] | None,
            Field(None, description="for a rep: its team's additive fields in the same partition and window"),
        )
    fields["updated_at"] = (AwareDatetime, ...)
    model: type[BaseModel] = create_model(
        spec.model_name, __config__=ConfigDict(extra="forbid"), __doc__=spec.doc, **fields
    )
    return model
