"""The SLA alert clock: fires due alerts from the lead states of owned partitions and publishes them.

It drives the lead-response family's alert state (``due_alerts``, ``pending_alerts``, ``mark_published``)
and the alert sinks (``outputs.alerts``): a status is recorded as published only after both sinks took it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from mode import Service

from salespulse.outputs.alerts import AlertSinks
from salespulse.outputs.prometheus import WorkerHealth

log = logging.getLogger(__name__)

#: (partition, lead id, the contract's alert JSON)
Alert = tuple[int, str, dict[str, Any]]


@runtime_checkable
class AlertSource(Protocol):
    """A family whose state fires alerts (the lead-response family's SLA alerts)."""

    #: Partitions loaded with unpublished alerts: a previous owner may have sent them unrecorded.
    inherited_unpublished: set[int]

    def due_alerts(self, partitions: Iterable[int], now: float) -> int: ...
    def pending_alerts(self, owned: set[int]) -> list[Alert]: ...
    def mark_published(self, published: Iterable[tuple[int, str, str]]) -> None: ...


class AlertClock(Service):
    """Fires due SLA alerts from the lead states of owned partitions and publishes them, every tick."""

    def __init__(
        self,
        family: AlertSource,
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
