"""The SLA alert clock: fires due alerts from the lead states of owned partitions and publishes them.

It drives the lead-response family's alert state (``due_alerts``, ``pending_alerts``, ``mark_published``)
and the alert sinks (``outputs.alerts``): a status is recorded as published only after both sinks took it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mode import Service

from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.outputs.alerts import AlertSinks
from salespulse.outputs.prometheus import WorkerHealth

log = logging.getLogger(__name__)


class AlertClock(Service):
    """Fires due SLA alerts from the lead states of owned partitions and publishes them, every tick."""

    def __init__(
        self,
        family: LeadResponseFamily,
        owned: Callable[[], set[int]],
        sinks: AlertSinks,
        health: WorkerHealth,
        tick_s: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.family = family
        self.owned = owned
        self.sinks = sinks
        self.health = health
        self.tick_s = tick_s

    async def on_start(self) -> None:
        await self.sinks.start()

    async def on_stop(self) -> None:
        await self.sinks.stop()

    @Service.task
    async def _tick(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:  # the clock must outlive any single failure
                self.health.publish_errors.labels("alerts").inc()
                log.exception("alert tick failed")

    async def tick(self, now: float | None = None) -> int:
        """Fire what is due and publish what is unpublished; returns how many alerts went out."""
        owned = self.owned()
        inherited = sorted(self.family.inherited_unpublished & owned)
        if inherited:
            # A previous owner may have sent these and crashed before recording it: read them back.
            sent = await asyncio.gather(*(self.sinks.already_sent(p) for p in inherited))
            for partition, pairs in zip(inherited, sent):
                self.family.mark_published((partition, lead_id, status) for lead_id, status in pairs)
                self.family.inherited_unpublished.discard(partition)
        self.family.due_alerts(owned, time.time() if now is None else now)
        pending = self.family.pending_alerts(owned)
        if pending:
            await self.sinks.send(pending)
            self.family.mark_published((partition, lead_id, alert["status"]) for partition, lead_id, alert in pending)
            for _, _, alert in pending:
                self.health.alerts.labels(alert["status"]).inc()
        return len(pending)
