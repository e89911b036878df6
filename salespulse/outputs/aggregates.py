"""What a metric family hands to the publishers: absolute per-partition partial values."""

from __future__ import annotations

from typing import Any, NamedTuple


class Partial(NamedTuple):
    """One partition's absolute value of one published aggregate (a Redis hash and a metric record)."""

    family: str
    redis_key: str
    partition: int
    watermark: int
    fields: dict[str, int | float]
    ttl_s: int
    topic_key: str
    record: dict[str, Any]
    #: For a per-rep partial of a family with ``beside_rates``: the Redis key of its team's total.
    group_key: str | None = None


def is_live(partial: Partial) -> bool:
    """True for the windows a flush sends first: all time, today and current snapshots (``now``)."""
    window = partial.record.get("window", "")
    return window in ("all", "now") or window.startswith("day:")
