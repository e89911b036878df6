"""The alert clock: fires due alerts from the entity states of owned partitions and publishes them.

It drives the alert state of every rule's source (the lead-response family's SLA and warning, the
pipeline's ``deal_stalled`` clocks) (``due_alerts``, ``pending_alerts``, ``mark_published``) and the alert
sinks (``outputs.alerts``): a status is recorded as published only after both sinks took it. With
Alertmanager configured (``outputs.alertmanager``), every new status is queued for it too, and every
``resend_s`` (and at once when partitions are taken over) the alerts the states hold are sent again:
Alertmanager keeps firing alerts alive only while they are re-sent, and a new owner of a partition
sends what the previous one sent, with the same labels (so Alertmanager keeps one alert).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from mode import Service

from salespulse.outputs.alertmanager import AlertmanagerSink
from salespulse.outputs.alerts import AlertSinks, published_key
from salespulse.outputs.prometheus import WorkerHealth

log = logging.getLogger(__name__)

#: (partition, lead id, the contract's alert JSON)
Alert = tuple[int, str, dict[str, Any]]


@runtime_checkable
class AlertSource(Protocol):
    """State that fires alerts: the lead-response family (SLA, warning), ``families.entity_clocks.EntityClocks``.

    The second item of an ``Alert`` names the alert's entity in the guard hash and the topic's key; for
    the lead rules it is the lead id, for the others ``<entity>@<episode start>`` (``outputs.alerts.clock_id``).
    """

    #: Partitions loaded with unpublished alerts: a previous owner may have sent them unrecorded.
    inherited_unpublished: set[int]

    def due_alerts(self, partitions: Iterable[int], now: float) -> int: ...
    def pending_alerts(self, owned: set[int]) -> list[Alert]: ...
    def mark_published(self, published: Iterable[tuple[int, str, str]]) -> None: ...
    def active_alerts(self, owned: Iterable[int], now: float, resolved_within_s: float) -> list[dict[str, Any]]: ...


@runtime_checkable
class AlertingFamily(Protocol):
    """A family that holds alert sources besides (or instead of) being one (the pipeline's stall clocks)."""

    @property
    def alert_sources(self) -> Sequence[AlertSource]: ...


class AlertClock(Service):
    """Fires due alerts from the sources' states of owned partitions and publishes them, every tick."""

    def __init__(
        self,
        sources: Sequence[AlertSource],
        owned: Callable[[], set[int]],
        sinks: AlertSinks,
        health: WorkerHealth,
        tick_s: float = 0.1,
        alertmanager: AlertmanagerSink | None = None,
        resend_s: float = 60.0,
        resolved_resend_s: float = 600.0,
    ) -> None:
        super().__init__()
        self.alertmanager = alertmanager
        self.resend_s = resend_s
        self.resolved_resend_s = resolved_resend_s
        self._next_resend = 0.0
        self._resent_for: set[int] = set()
        self.sources = tuple(sources)
        self.owned = owned
        self.sinks = sinks
        self.health = health
        self.tick_s = tick_s

    async def on_start(self) -> None:
        await self.sinks.start()
        if self.alertmanager is not None:
            await self.alertmanager.start()

    async def on_stop(self) -> None:
        if self.alertmanager is not None:
            await self.alertmanager.stop()
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
        now = time.time() if now is None else now
        pending: list[tuple[AlertSource, Alert]] = []
        for source in self.sources:
            inherited = sorted(source.inherited_unpublished & owned)
            if inherited:
                # A previous owner may have sent these and crashed before recording it: read them back.
                sent = await asyncio.gather(*(self.sinks.already_sent(p) for p in inherited))
                for partition, pairs in zip(inherited, sent):
                    source.mark_published((partition, clock_id, status) for clock_id, status in pairs)
                    source.inherited_unpublished.discard(partition)
            source.due_alerts(owned, now)
            pending.extend((source, alert) for alert in source.pending_alerts(owned))
        if pending:
            self.sinks.add([alert for _, alert in pending])
            await self.sinks.flush()
            for source in self.sources:  # one durable record per source and partition, not per alert
                source.mark_published(
                    (partition, clock_id, published_key(alert)) for owner, (partition, clock_id, alert) in pending if owner is source
                )
            for _, (_, _, alert) in pending:
                self.health.alerts.labels(alert["status"], alert["alert"], alert.get("team") or "unassigned").inc()
        if self.alertmanager is not None:
            self.alertmanager.put(alert for _, (_, _, alert) in pending)
            if now >= self._next_resend or owned - self._resent_for:
                for source in self.sources:
                    self.alertmanager.put(source.active_alerts(owned, now, self.resolved_resend_s))
                self._next_resend = now + self.resend_s
            self._resent_for = owned
        return len(pending)
