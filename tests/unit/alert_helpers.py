"""Test doubles for the engine's alert clock: sinks that record what went out and answer read-backs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from salespulse.engine.alert_clock import AlertClock, AlertSource
from salespulse.outputs.prometheus import WorkerHealth


class FakeSinks:
    """Records every alert sent (with its clock id); ``already`` is what a read-back of the topic finds."""

    def __init__(self, already: set[tuple[str, str]] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.clock_ids: list[str] = []
        self.already = already or set()
        self.read_backs: list[int] = []

    def add(self, alerts: list[tuple[int, str, dict[str, Any]]]) -> None:
        self.clock_ids += [cid for _, cid, _ in alerts]
        self.sent += [alert for _, _, alert in alerts]

    async def flush(self) -> int:
        return 0

    async def already_sent(self, partition: int) -> set[tuple[str, str]]:
        self.read_backs.append(partition)
        return self.already


def alert_clock(sources: Iterable[AlertSource], sinks: FakeSinks, owned: Callable[[], set[int]] = lambda: {0}) -> AlertClock:
    return AlertClock(list(sources), owned, sinks, WorkerHealth(CollectorRegistry()))  # type: ignore[arg-type]
