"""Field-by-field sums: how partials of every family merge (partitions, hours)."""

from __future__ import annotations

from collections.abc import Mapping

Number = int | float


def add_fields(into: dict[str, Number], fields: Mapping[str, Number]) -> dict[str, Number]:
    """Add ``fields`` into ``into`` field by field and return ``into``."""
    for name, value in fields.items():
        into[name] = into.get(name, 0) + value
    return into
