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

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar, overload

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key
from salespulse.families.state import JSON_CELLS, Cell, StateCodec

S = TypeVar("S")


class CellStore(Generic[S]):
    """Working copy (decoded) of the cells of the partitions this worker owns, over a durable table."""

    @overload
    def __init__(self: CellStore[Cell], table: MutableMapping[str, bytes], prefix: str) -> None: ...

    @overload
    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: StateCodec[S]) -> None: ...

    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: Any = JSON_CELLS) -> None:
        self._table = table
        self._prefix = prefix
        self._codec: StateCodec[S] = codec
        self._cells: dict[int, dict[str, S]] = {}
        self._touched: dict[int, set[str]] = {}

    @property
    def prefix(self) -> str:
        """The prefix of this store's table rows (``"<partition>|<prefix>|<name>"``)."""
        return self._prefix

    @property
    def partitions(self) -> set[int]:
        """Partitions whose cells are loaded."""
        return set(self._cells)

    def load_partition(self, partition: int, decoded: DecodedRows | None = None) -> int:
        """Load a partition's cells from the table (after recovery), or from its rows ``decoded`` ahead; returns
        the highest watermark seen."""
        decode, watermark = self._codec.decode, self._codec.watermark
        cells = {name: decode(name, raw) for name, raw in rows_under(self._table, partition, self._prefix, decoded)}
        self._cells[partition] = cells
        self._touched[partition] = set()
        return max((watermark(cell) for cell in cells.values()), default=-1)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition this worker no longer owns (its table rows stay for the new owner)."""
        self._cells.pop(partition, None)
        self._touched.pop(partition, None)

    def cell(self, partition: int, name: str) -> S:
        """The cell ``name`` of a loaded partition, created empty (``wm = -1``) if new."""
        cells = self._cells[partition]
        found = cells.get(name)
        if found is None:
            found = cells[name] = self._codec.new(name)
        return found

    def loaded(self, partition: int) -> dict[str, S]:
        """The cells of a loaded partition by name, to read in hot loops (create with ``cell``, mark with ``touch``)."""
        return self._cells[partition]

    def get(self, partition: int, name: str) -> S | None:
        """The cell if it exists, without creating it."""
        cells = self._cells.get(partition)
        return None if cells is None else cells.get(name)

    def touch(self, partition: int, name: str) -> None:
        """Mark a cell changed in the current batch, so ``write_touched`` persists it."""
        self._touched[partition].add(name)

    def write_touched(self, partition: int, watermark: int) -> int:
        """Persist every touched cell of a partition with ``wm = watermark``; returns how many."""
        touched = self._touched[partition]
        cells = self._cells[partition]
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
        cell = self._cells[partition][name]
        self._table[table_key(partition, f"{self._prefix}|{name}")] = orjson.dumps(self._codec.encode(cell))

    def write_many(self, partition: int, names: set[str]) -> None:
        """Persist several cells now, keeping their watermarks."""
        for name in names:
            self.write(partition, name)

    def delete(self, partition: int, name: str) -> None:
        """Remove a cell from memory and (with a changelog tombstone) from the table."""
        if self._cells.get(partition, {}).pop(name, None) is not None:
            self._touched[partition].discard(name)
            key = table_key(partition, f"{self._prefix}|{name}")
            if key in self._table:
                del self._table[key]

    def delete_many(self, partition: int, names: Iterable[str]) -> int:
        """Remove several cells (one tombstone each); returns how many were there."""
        gone = 0
        for name in names:
            if name in self._cells.get(partition, {}):
                self.delete(partition, name)
                gone += 1
        return gone

    def items(self, partition: int) -> Iterator[tuple[str, S]]:
        """The cells of a loaded partition."""
        return iter(list(self._cells.get(partition, {}).items()))
