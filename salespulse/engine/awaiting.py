"""Leads waiting now, to Redis: ``salespulse:lead_response:awaiting:p<partition>`` (docs/outputs.md).

One JSON string per owned partition of ``salespulse.events``: the count of its live leads not yet
touched and the oldest of them with owner, team, source, creation and deadline. Written from the lead
states as an absolute value (idempotent), when the partition's awaiting leads changed and every
``refresh_s`` anyway, with a TTL a few refreshes long: a key of a partition nobody owns any more, or a
Redis that lost its data, heals within a refresh. Each write is announced on ``salespulse:updates``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from mode import Service

from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.outputs.aggregates import awaiting_key
from salespulse.outputs.prometheus import WorkerHealth
from salespulse.outputs.redis import UPDATES_CHANNEL

log = logging.getLogger(__name__)

#: The oldest leads kept per partition: the board shows the longest waits, the count covers the rest.
LEADS_PER_PARTITION = 50


class AwaitingPublisher(Service):
    """Writes the awaiting leads of changed owned partitions every ``tick_s``, all of them every ``refresh_s``."""

    def __init__(
        self,
        family: LeadResponseFamily,
        owned: Callable[[], set[int]],
        redis_client: aioredis.Redis,
        health: WorkerHealth,
        tick_s: float = 0.25,
        refresh_s: float = 30.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.family = family
        self.owned = owned
        self.redis = redis_client
        self.health = health
        self.tick_s = tick_s
        self.refresh_s = refresh_s
        self._last_full = 0.0

    def refresh_all(self) -> None:
        """Write every owned partition at the next tick (Redis lost its data)."""
        self._last_full = float("-inf")

    @Service.task
    async def _tick(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.tick_s)
            try:
                await self.publish()
            except Exception as exc:  # kept dirty: the next tick retries
                self.health.publish_errors.labels("redis").inc()
                log.warning("publishing awaiting leads failed: %r", exc)

    async def publish(self, full: bool | None = None) -> int:
        """Write the awaiting leads of changed (``full``: all) owned partitions; returns how many keys."""
        owned = self.owned()
        if full is None:
            full = time.monotonic() - self._last_full >= self.refresh_s
        partitions = sorted(owned if full else self.family.awaiting_changed & owned)
        if not partitions:
            return 0
        self.family.awaiting_changed.difference_update(partitions)
        ttl = max(1, int(self.refresh_s * 4))
        updates = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for partition in partitions:
                    count, leads = self.family.awaiting_leads(partition, LEADS_PER_PARTITION)
                    key = awaiting_key(partition)
                    pipe.set(key, orjson.dumps({"partition": partition, "count": count, "leads": leads}), ex=ttl)
                    updates.append({"key": key, "values": {"count": count}})
                pipe.publish(UPDATES_CHANNEL, orjson.dumps({"family": "lead_response", "updates": updates}))
                await pipe.execute()
        except Exception:
            self.family.awaiting_changed.update(partitions)
            raise
        if full:
            self._last_full = time.monotonic()
        return len(partitions)
