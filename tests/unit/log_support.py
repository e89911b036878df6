"""Test support: a dict standing in for the changelogged Faust table, and raw records of a partition's log."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from salespulse.engine.processor import Record


class RecordingTable(dict):  # type: ignore[type-arg]
    """A dict table that remembers the order of its writes (the changelog keeps that order)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log: list[tuple[str, bytes | None]] = []

    def __setitem__(self, key: str, value: bytes) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.log.append((key, None))
        super().__delitem__(key)


def records(partition: int, events: Sequence[dict[str, Any]], first_offset: int = 0) -> list[Record]:
    """Events as consecutive ``(partition, offset, raw JSON)`` records of one partition's log."""
    return [(partition, first_offset + i, orjson.dumps(e)) for i, e in enumerate(events)]


def crash_mid_write(table: RecordingTable, process: Callable[[], object], rnd: random.Random) -> RecordingTable:
    """Run ``process`` against ``table``, then keep only a random prefix of its writes (what reached the
    changelog before a crash); returns the table a restarted worker would load."""
    landed = dict(table)
    table.log.clear()
    process()
    for key, value in table.log[: rnd.randint(0, len(table.log))]:
        if value is None:
            landed.pop(key, None)
        else:
            landed[key] = value
    return RecordingTable(landed)
