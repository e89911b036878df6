"""Durable aggregate cells kept per source partition, idempotent under replay.

A *cell* is one aggregate (a dict) of one partition, stored as JSON bytes in a changelogged table
under ``"<partition>|<name>"``. Each cell records ``wm``: the highest source offset already applied
to it. Events are applied in offset order, so an event with ``offset <= wm`` (a replay after a crash
between changelog write and offset commit) is skipped for that cell: nothing counts twice, even if
only some of a batch's writes reached the changelog. One write per touched cell per batch keeps the
changelog traffic independent of the event rate. A cell is a JSON object, or a family's typed state read
and written through its ``StateCodec``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key
from salespulse.engine.table_store import TableStore

S = TypeVar("S")


class CellStore(TableStore[S]):
    """Working copy (decoded) of the cells of the partitions this worker owns, over a durable table."""

    def load_partition(self, partition: int, decoded: DecodedRows | None = None) -> int:
        """Load a partition's cells from the table (after recovery), or from its rows ``decoded`` ahead; returns
        the highest watermark seen."""
        decode, watermark = self._codec.decode, self._codec.watermark
        cells = {name: decode(name, raw) for name, raw in rows_under(self._table, partition, self._prefix, decoded)}
        self._states[partition] = cells
        self._touched[partition] = set()
        return max((watermark(cell) for cell in cells.values()), default=-1)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition this worker no longer owns (its table rows stay for the new owner)."""
        self._states.pop(partition, None)
        self._touched.pop(partition, None)

    def write_touched(self, partition: int, watermark: int) -> int:
        """Persist every touched cell of a partition with ``wm = watermark``; returns how many."""
        touched = self._touched[partition]
        cells = self._states[partition]
        set_watermark, encode = self._codec.set_watermark, self._codec.encode
        for name in touched:
            cell = cells[name]
            set_watermark(cell, watermark)
            self._table[table_key(partition, f"{self._prefix}|{name}")] = orjson.dumps(encode(cell))
        count = len(touched)
        touched.clear()
        return count

    def write(self, partition: int, name: str) -> None:
        """Persist one cell now, keeping its watermark (a change driven by the clock, not an event).

        A cell that events changed since the last ``write_touched`` is left to that call (written now
        with its old watermark, a replay after a crash would count those events twice).
        """
        if name in self._touched[partition]:
            return
        cell = self._states[partition][name]
        self._table[table_key(partition, f"{self._prefix}|{name}")] = orjson.dumps(self._codec.encode(cell))

    def write_many(self, partition: int, names: set[str]) -> None:
        """Persist several cells now, keeping their watermarks."""
        for name in names:
            self.write(partition, name)

    def delete(self, partition: int, name: str) -> None:
        """Remove a cell from memory and (with a changelog tombstone) from the table."""
        if self._states.get(partition, {}).pop(name, None) is not None:
            self._touched[partition].discard(name)
            key = table_key(partition, f"{self._prefix}|{name}")
            if key in self._table:
                del self._table[key]

    def delete_many(self, partition: int, names: Iterable[str]) -> int:
        """Remove several cells (one tombstone each); returns how many were there."""
        gone = 0
        for name in names:
            if name in self._states.get(partition, {}):
                self.delete(partition, name)
                gone += 1
        return gone

