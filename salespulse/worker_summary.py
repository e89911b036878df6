"""The numbers of a worker's console summary, read from its own state and metrics (as /metrics shows them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from salespulse.console import Snapshot, counter_total, counter_total_where
from salespulse.families.fields import Number, add_fields
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.rules import quantile

if TYPE_CHECKING:
    from salespulse.engine.worker import WorkerRuntime


def worker_snapshot(runtime: WorkerRuntime) -> Callable[[], Snapshot]:
    """Records consumed; with the lead-response family: leads waiting, today's p50 speed to lead, alerts fired."""
    family = runtime.families.get("lead_response")

    def take() -> Snapshot:
        events = counter_total(runtime.health.events)
        if not isinstance(family, LeadResponseFamily):
            return Snapshot(at=time.monotonic(), events=events)
        now = time.time()
        owned = runtime.owned_partitions()
        waiting = sum(count for count, _ in family.awaiting_by_team(owned, now).values())
        today: dict[str, Number] = {}
        for fields in family.current_window(owned, "team", "day", now).values():
            add_fields(today, fields)
        fired = counter_total_where(runtime.health.alerts, "status", lambda status: status == "firing")
        return Snapshot(time.monotonic(), events, waiting, quantile(today, 0.5), fired)

    return take
