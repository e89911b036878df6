"""Derived fields: values computed from merged totals, never summed (rates, averages, gaps, quantiles).

One declaration per family (``Derived``), read twice: ``compute`` in Python (the reference, tests,
batch recomputation) and ``redis_spec`` for the merge script (``merge_partials.lua``), which applies
the same steps in the same order: sums, ratios, products, then each histogram's quantiles.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

Number = int | float


@dataclass(frozen=True)
class Sum:
    """``name = Σ coefficient × field``, when every ``requires`` field and some term is present."""

    name: str
    terms: tuple[tuple[str, float], ...]
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ratio:
    """``name = numerator / denominator`` when the denominator is positive (a missing numerator is 0)."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Product:
    """``name = Π numerators / Π denominators``: every numerator present, the denominator positive."""

    name: str
    numerators: tuple[str, ...]
    denominators: tuple[str, ...]


@dataclass(frozen=True)
class Histogram:
    """Non-cumulative bucket counts ``<prefix>le_<bound>`` ... ``<prefix>le_inf`` and the quantiles read from them."""

    prefix: str
    bounds: tuple[float, ...]
    #: (derived field name, q)
    quantiles: tuple[tuple[str, float], ...] = ()

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The bucket field names, in bound order, ``+Inf`` last."""
        return tuple(f"{self.prefix}le_{int(b)}" for b in self.bounds) + (f"{self.prefix}le_inf",)

    def bucket(self, value: float) -> str:
        """The bucket field a value falls in (``le_300`` holds (180, 300])."""
        return self.fields[bisect_left(self.bounds, value)]

    def quantile(self, fields: Mapping[str, Number], q: float) -> float | None:
        """The q-quantile from the bucket counts, interpolating within a bucket; None without counts.

        Beyond the last bound the bound itself is reported: a value is never invented.
        """
        names = self.fields
        total = sum(fields.get(name, 0) for name in names)
        if total <= 0:
            return None
        target, seen, lower = q * total, 0.0, 0.0
        for name, upper in zip(names, (*self.bounds, None)):
            count = fields.get(name, 0)
            if count and seen + count >= target:
                if upper is None:
                    return lower
                return lower + (upper - lower) * (target - seen) / count
            seen += count
            if upper is not None:
                lower = upper
        return lower


@dataclass(frozen=True)
class Derived:
    """Every derived field of a family, in the order they are computed."""

    sums: tuple[Sum, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    products: tuple[Product, ...] = ()
    histograms: tuple[Histogram, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        """The derived field names (rates published beside a rep's are chosen among these)."""
        return (
            *(s.name for s in self.sums),
            *(r.name for r in self.ratios),
            *(p.name for p in self.products),
            *(name for h in self.histograms for name, _q in h.quantiles),
        )

    def compute(self, fields: Mapping[str, Number]) -> dict[str, float]:
        """The derived fields of a merged set of fields; a field whose inputs are undefined is absent."""
        total: dict[str, Number] = dict(fields)
        out: dict[str, float] = {}
        for s in self.sums:
            if all(f in total for f in s.requires) and any(f in total for f, _c in s.terms):
                out[s.name] = total[s.name] = sum(total.get(f, 0) * c for f, c in s.terms)
        for r in self.ratios:
            den = total.get(r.denominator, 0)
            if den > 0:
                out[r.name] = total[r.name] = total.get(r.numerator, 0) / den
        for p in self.products:
            denominator = 1.0
            for d in p.denominators:
                denominator *= total.get(d, 0)
            if denominator > 0 and all(n in total for n in p.numerators):
                numerator = 1.0
                for n in p.numerators:
                    numerator *= total[n]
                out[p.name] = total[p.name] = numerator / denominator
        for h in self.histograms:
            for name, q in h.quantiles:
                value = h.quantile(fields, q)
                if value is not None:
                    out[name] = value
        return out

    def redis_spec(self) -> dict[str, Any]:
        """The same declaration as the merge script reads it (``merge_partials.lua``, ``derive``)."""
        return {
            "sums": [{"name": s.name, "terms": [[f, c] for f, c in s.terms], "requires": list(s.requires)} for s in self.sums],
            "ratios": [[r.name, r.numerator, r.denominator] for r in self.ratios],
            "products": [[p.name, list(p.numerators), list(p.denominators)] for p in self.products],
            "histograms": [
                {
                    "buckets": [[name, bound] for name, bound in zip(h.fields, (*h.bounds, -1))],
                    "quantiles": [[name, q] for name, q in h.quantiles],
                }
                for h in self.histograms
            ],
        }
