"""What a family's ``build`` gets from the worker: state stores by name, the configuration, the clock zone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from salespulse.config import Config
from salespulse.families.state import Cell, StateStore, StatesFactory


@dataclass(frozen=True)
class FamilyContext:
    """Everything a family may be built from (nothing else: no settings object, no Faust)."""

    #: A store of windowed cells, one record per cell (``CellStore``), by name.
    cells: Callable[[str], StateStore[Cell]]
    #: A store of entity states, one changelog record per batch (``RecordLog``), by name (and codec, for a
    #: typed state).
    states: StatesFactory
    tz: ZoneInfo
    retention_s: float
    config: Config
    #: The lead-response SLA from the environment (the config may override it).
    sla_s: float
    #: Target kinds published by another family than the one being built (their fields live there).
    foreign_target_kinds: frozenset[str] = frozenset()
    #: Partitions of ``salespulse.events`` (where a key lands: a rule keyed by rep needs to know).
    partitions: int = 1
