"""Leads waiting now, to Redis: ``salespulse:lead_response:awaiting:p<partition>`` (docs/outputs.md).

A ``Sink`` of ``AwaitingSnapshot``: one JSON string per owned partition of ``salespulse.events`` with the
count of its live leads not yet touched and the oldest of them (owner, team, source, creation,
deadline). Each is an absolute value (idempotent) written with a TTL a few refreshes long, so a key of a
partition nobody owns any more, or a Redis that lost its data, heals within a refresh. Each flush is
announced on ``salespulse:updates``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from salespulse.outputs.aggregates import awaiting_key
from salespulse.outputs.redis import UPDATES_CHANNEL


@dataclass(frozen=True)
class AwaitingSnapshot:
    """A partition's awaiting leads: how many, and the oldest ones as the board shows them."""

    partition: int
    count: int
    leads: list[dict[str, Any]] = field(default_factory=list)


class AwaitingSink:
    """Buffers the newest snapshot per partition; ``flush`` writes them in one pipeline (kept on failure)."""

    name = "awaiting"

    def __init__(self, redis_client: aioredis.Redis, ttl_s: int) -> None:
        self.redis = redis_client
        self.ttl_s = ttl_s
        self.backlog: dict[int, AwaitingSnapshot] = {}

    def add(self, items: Sequence[AwaitingSnapshot]) -> None:
        for snapshot in items:
            self.backlog[snapshot.partition] = snapshot

    async def flush(self, force: bool = False) -> int:
        if not self.backlog:
            return 0
        pending, self.backlog = self.backlog, {}
        updates = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for snapshot in pending.values():
                    key = awaiting_key(snapshot.partition)
                    value = {"partition": snapshot.partition, "count": snapshot.count, "leads": snapshot.leads}
                    pipe.set(key, orjson.dumps(value), ex=self.ttl_s)
                    updates.append({"key": key, "values": {"count": snapshot.count}})
                pipe.publish(UPDATES_CHANNEL, orjson.dumps({"family": "lead_response", "updates": updates}))
                await pipe.execute()
        except BaseException:
            for partition, snapshot in pending.items():
                self.backlog.setdefault(partition, snapshot)  # a newer snapshot added meanwhile wins
            raise
        return len(pending)
