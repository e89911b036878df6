"""The one declaration of a metric family: its fields, derived fields, windows, scopes and Prometheus series.

Everything else is read from it, never written a second time: the fields a partial publishes
(``published``), the Python derived fields and the Redis merge spec (``derived``, see
``outputs.derived``), the metric record model and its JSON Schema (``record_model``), the Prometheus
collector (``series``, see ``outputs.series``) and the docs tables (``docs_table``). A family's rules
produce the fields; a field a rule produces that its spec does not declare is an error in the tests
(``undeclared``), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from salespulse.outputs.derived import Derived
from salespulse.outputs.records import RecordSpec, record_model, window_pattern
from salespulse.outputs.series import AnySeries, HistogramSeries, LiveSeries


@dataclass(frozen=True)
class Field:
    """An additive field (partials of every partition and hour sum field by field).

    ``name`` may end with ``<...>`` for a family of fields named at run time (``entries:<stage>``).
    """

    name: str
    doc: str

    @property
    def prefix(self) -> str | None:
        """For a field family ``entries:<stage>``: ``entries:``; None for a plain field."""
        return self.name[: self.name.index("<")] if self.name.endswith(">") else None


@dataclass(frozen=True)
class FamilySpec:
    """A family as data (see the module docstring for what is derived from it)."""

    name: str
    #: Redis keys ``<redis_prefix>:<scope>:<id>:<window>``.
    redis_prefix: str
    #: Scopes published to Redis and the metric topic.
    scopes: tuple[str, ...]
    #: Scopes kept in the all-time cell only, with structured ids (Prometheus label combinations): scope ->
    #: how many parts its ids have (``{"team_source": 2}``: ``(team, source)``).
    all_time_scopes: Mapping[str, int]
    #: Rolling window name -> span in hours (calendar windows day, week, month and ``all`` always).
    rolling: Mapping[str, int]
    fields: tuple[Field, ...]
    record: RecordSpec
    derived: Derived = Derived()
    series: tuple[AnySeries, ...] = ()
    #: Prometheus series of what no scope holds (waiting leads, open deals now), read from the family's state.
    live: tuple[LiveSeries[Any], ...] = ()
    #: Windows beyond the calendar and rolling ones (``now``: open pipeline).
    extra_windows: tuple[str, ...] = ()
    #: Derived rates whose team value is written beside a rep's (``team_<rate>``).
    beside: tuple[str, ...] = ()
    #: Publish only the declared plain fields (drop rule-internal ones); else every field the rules produce.
    only_declared: bool = False
    #: Zero-valued fields are left out of a partial (a count back to zero after a correction).
    drop_zeros: bool = False
    notes: tuple[str, ...] = field(default=())

    @cached_property
    def plain_fields(self) -> tuple[str, ...]:
        """The declared fields with fixed names, in declaration order."""
        return tuple(f.name for f in self.fields if f.prefix is None)

    @cached_property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(p for f in self.fields if (p := f.prefix) is not None)

    def declares(self, name: str) -> bool:
        """True if ``name`` is a declared field (plain or of a declared field family)."""
        return name in self.plain_fields or any(name.startswith(p) for p in self.prefixes)

    def undeclared(self, names: set[str]) -> set[str]:
        """The names a rule produced that the spec does not declare (tests keep this empty)."""
        return {name for name in names if not self.declares(name)}

    @cached_property
    def window_regex(self) -> str:
        return window_pattern(tuple(self.rolling), self.extra_windows)

    @cached_property
    def record_model(self) -> type[BaseModel]:
        """The pydantic model of this family's metric record (its JSON Schema is ``schemas/metrics/<name>.json``)."""
        return record_model(self.name, self.scopes, self.window_regex, self.record)

    def docs_table(self) -> str:
        """The family's fields and derived fields as a Markdown table (docs/metrics.md embeds it)."""
        rows = ["| field | kind | meaning |", "| --- | --- | --- |"]
        grouped: list[tuple[list[str], str]] = []  # consecutive fields with one meaning share a row
        for f in self.fields:
            if grouped and grouped[-1][1] == f.doc:
                grouped[-1][0].append(f.name)
            else:
                grouped.append(([f.name], f.doc))
        rows += [f"| {', '.join(f'`{n}`' for n in names)} | additive | {doc} |" for names, doc in grouped]
        for s in self.derived.sums:
            rows.append(f"| `{s.name}` | derived | " + " + ".join(f"{c:g} × `{t}`" for t, c in s.terms) + " |")
        for r in self.derived.ratios:
            rows.append(f"| `{r.name}` | derived | `{r.numerator}` / `{r.denominator}` |")
        for p in self.derived.products:
            rows.append(f"| `{p.name}` | derived | {' × '.join(p.numerators)} / ({' × '.join(p.denominators)}) |")
        for h in self.derived.histograms:
            for name, q in h.quantiles:
                rows.append(f"| `{name}` | derived | {q:g}-quantile of the `{h.prefix}le_*` buckets |")
        return "\n".join(rows) + self._series_table()

    def _series_table(self) -> str:
        """The family's Prometheus series (``series`` from the all-time scopes, ``live`` from state now)."""
        if not self.series and not self.live:
            return ""
        rows = ["", "", "| Prometheus series | type | labels | meaning |", "| --- | --- | --- | --- |"]
        for s in (*self.series, *self.live):
            kind = "histogram" if isinstance(s, HistogramSeries) else s.kind
            name = f"{s.name}_total" if kind == "counter" else s.name
            source = f"all-time `{s.scope}` scope" if not isinstance(s, LiveSeries) else "the family's state now"
            labels = ", ".join(f"`{label}`" for label in s.labels) or "–"
            rows.append(f"| `{name}` | {kind} | {labels} | {s.help.rstrip('.')} (from {source}) |")
        return "\n".join(rows)
