"""Leads waiting now, from the lead-response family's states to the ``AwaitingSink`` (``outputs.awaiting``).

Every ``tick_s`` the partitions whose awaiting leads changed (every ``refresh_s``: all owned ones) are
rendered as snapshots, added to the sink and flushed: the sink keeps what it could not deliver for the
next tick, and a newer snapshot of a partition replaces an older one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mode import Service

from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.outputs.awaiting import AwaitingSink, AwaitingSnapshot
from salespulse.outputs.prometheus import WorkerHealth

log = logging.getLogger(__name__)

#: The oldest leads kept per partition: the board shows the longest waits, the count covers the rest.
LEADS_PER_PARTITION = 50
#: Every owned partition is written this often, changed or not; its key lives a few refreshes.
REFRESH_S = 30.0
AWAITING_TTL_S = int(REFRESH_S * 4)


class AwaitingPublisher(Service):
    """Writes the awaiting leads of changed owned partitions every ``tick_s``, all of them every ``refresh_s``."""

    def __init__(
        self,
        family: LeadResponseFamily,
        owned: Callable[[], set[int]],
        sink: AwaitingSink,
        health: WorkerHealth,
        tick_s: float = 0.25,
        refresh_s: float = REFRESH_S,
    ) -> None:
        super().__init__()
        self.family = family
        self.owned = owned
        self.sink = sink
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
            except Exception as exc:  # the sink keeps it: the next tick retries
                self.health.publish_errors.labels("redis").inc()
                log.warning("publishing awaiting leads failed: %r", exc)

    async def publish(self, full: bool | None = None) -> int:
        """Write the awaiting leads of changed (``full``: all) owned partitions; returns how many keys."""
        owned = self.owned()
        if full is None:
            full = time.monotonic() - self._last_full >= self.refresh_s
        partitions = sorted(owned if full else self.family.awaiting_changed & owned)
        self.family.awaiting_changed.difference_update(partitions)
        self.sink.add([AwaitingSnapshot(partition, *self.family.awaiting_leads(partition, LEADS_PER_PARTITION))
                       for partition in partitions])
        await self.sink.flush()  # also what a failed flush kept
        if full:
            self._last_full = time.monotonic()
        return len(partitions)
