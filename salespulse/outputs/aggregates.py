"""What a metric family hands to the outputs: one partition's absolute value of one aggregate.

A family says *what* the aggregate is (family, scope, id, window, partition, watermark, fields);
``partial`` turns that into what the sinks deliver, with the key schemas of docs/outputs.md:
Redis hash ``<prefix>:<scope>:<id>:<window>`` (``<prefix>:open:<scope>:<id>`` for the ``now``
snapshots), metric-record key ``<scope>:<id>:<window>:p<partition>`` and the metric record itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

#: The window of snapshots that are not windowed (the open pipeline now).
NOW = "now"


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


def redis_key(prefix: str, scope: str, ident: str, window: str) -> str:
    """The Redis hash of an aggregate's total."""
    return f"{prefix}:open:{scope}:{ident}" if window == NOW else f"{prefix}:{scope}:{ident}:{window}"


def partial(
    family: str,
    prefix: str,
    scope: str,
    ident: str,
    window: str,
    partition: int,
    watermark: int,
    fields: dict[str, int | float],
    ttl_s: int,
    updated_at: str,
    targets: Mapping[str, int] | None = None,
    team: str | None = None,
) -> Partial:
    """The partial of an aggregate: its keys and its metric record (``schemas/metrics/<family>.json``).

    ``targets``: a rep's targets in this window (not additive: every partition's partial carries them and
    Redis merges ``target:<kind>`` by max). ``team``: the rep's team, whose fields ride beside the rep's.
    """
    record: dict[str, Any] = {
        "family": family,
        "scope": scope,
        "id": ident,
        "window": window,
        "partition": partition,
        "watermark": watermark,
        "counts": fields,
        "updated_at": updated_at,
    }
    group_key = None
    if targets:
        fields = {**fields, **{f"target:{kind}": value for kind, value in targets.items()}}
        record["targets"] = dict(targets)
    if team is not None:
        group_key = redis_key(prefix, "team", team, window)
        record["team"] = team
        record["team_counts"] = {}
    if window == NOW:
        key, topic_key = f"{prefix}:open:{scope}:{ident}", f"open:{scope}:{ident}:p{partition}"
    else:  # the common case, spelled out here rather than calling ``redis_key``: one call less per aggregate
        key, topic_key = f"{prefix}:{scope}:{ident}:{window}", f"{scope}:{ident}:{window}:p{partition}"
    # Positional: twice as fast as keywords, and a render builds one per dirty aggregate.
    return Partial(family, key, partition, watermark, fields, ttl_s, topic_key, record, group_key)


#: Leads waiting now per partition (a JSON string, written by ``outputs.awaiting.AwaitingSink``).
AWAITING_PREFIX = "salespulse:lead_response:awaiting:p"


def awaiting_key(partition: int) -> str:
    """The Redis key of a partition's leads waiting now."""
    return f"{AWAITING_PREFIX}{partition}"


def is_live(partial: Partial) -> bool:
    """True for the windows a flush sends first: all time, today and current snapshots (``now``)."""
    window = partial.record.get("window", "")
    return window in ("all", NOW) or window.startswith("day:")
