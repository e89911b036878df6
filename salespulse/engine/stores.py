"""The families' stores over one table: ``CellStore`` for windowed cells, ``RecordLog`` for entity states."""

from __future__ import annotations

from collections.abc import MutableMapping
from zoneinfo import ZoneInfo

from salespulse.config import Config
from salespulse.engine.cells import CellStore
from salespulse.engine.record_log import RecordLog
from salespulse.families.context import FamilyContext
from salespulse.families.state import StateCodec, StateStore, S


def family_context(
    table: MutableMapping[str, bytes], config: Config, tz: ZoneInfo, retention_s: float, sla_s: float,
    foreign_target_kinds: frozenset[str] = frozenset(), partitions: int = 1,
) -> FamilyContext:
    """What a family is built from, with its stores over ``table`` (the worker's Faust table, or a dict)."""

    def states(prefix: str, codec: StateCodec[S]) -> StateStore[S]:
        return RecordLog(table, prefix, codec)

    return FamilyContext(
        cells=lambda prefix: CellStore(table, prefix),
        states=states,
        tz=tz,
        retention_s=retention_s,
        config=config,
        sla_s=sla_s,
        foreign_target_kinds=foreign_target_kinds,
        partitions=partitions,
    )
