"""Many small per-key states stored as one changelog record per batch (a per-partition delta log).

``CellStore`` writes one table row per cell: right for a few aggregate cells per batch, but one row
per lead would make every new lead a changelog write. ``RecordLog`` keeps the same interface and
writes every state changed in a batch as one record ``"<p>|<prefix>|<seq>"`` (a growing sequence);
loading replays the records in sequence order, later states winning. A record whose every state was
rewritten by a later one is deleted. A record that only a few of its states keep alive is *compacted*:
when the records kept hold more than twice as many states as are live, the live states of the records
that are less than half live are written again (as they are, watermarks included) in new records, which
empties and deletes the old ones. So the log, and the work of loading it after a restart, stays within
about twice the live states, however often they change.

A state is a JSON cell, or a family's typed state read and written through its ``StateCodec``.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, TypeVar, overload

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key
from salespulse.engine.table_store import TableStore
from salespulse.families.state import JSON_CELLS, Cell, StateCodec

S = TypeVar("S")

_MAX_STATES_PER_RECORD = 1000  # keeps each record well under Kafka's 1 MB message limit
#: States the records kept may hold beyond twice the live ones before a compaction (so a small log never compacts).
_COMPACT_SLACK = _MAX_STATES_PER_RECORD


class RecordLog(TableStore[S]):
    """Working copy of per-key states of owned partitions, persisted as batch records."""

    @overload
    def __init__(self: RecordLog[Cell], table: MutableMapping[str, bytes], prefix: str) -> None: ...

    @overload
    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: StateCodec[S]) -> None: ...

    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: Any = JSON_CELLS) -> None:
        super().__init__(table, prefix, codec)
        self._where: dict[int, dict[str, int]] = {}  # key -> seq of the record holding its latest state
        # seq -> how many latest states (or deletions) it holds; keys in increasing seq order (records
        # are added in sequence and only ever removed), so the oldest live record is the first key.
        self._live: dict[int, dict[int, int]] = {}
        self._tombs: dict[int, dict[int, set[str]]] = {}  # seq -> keys whose latest word is "deleted" there
        self._next_seq: dict[int, int] = {}
        self._size: dict[int, dict[int, int]] = {}  # seq -> how many states (or deletions) it was written with
        self._held: dict[int, int] = {}  # the states (or deletions) written in the records kept

    def _key(self, partition: int, seq: int) -> str:
        return table_key(partition, f"{self._prefix}|{seq:012d}")

    def load_partition(self, partition: int, decoded: DecodedRows | None = None) -> int:
        """Replay a partition's records (from the table, or from its rows ``decoded`` ahead); returns the highest
        state watermark seen."""
        records: list[tuple[int, dict[str, Cell | None]]] = [
            (int(seq), changes) for seq, changes in rows_under(self._table, partition, self._prefix, decoded)
        ]
        records.sort(key=lambda item: item[0])
        raw: dict[str, Cell] = {}
        where: dict[str, int] = {}
        for seq, changes in records:
            for name, state in changes.items():
                where[name] = seq
                if state is None:
                    raw.pop(name, None)
                else:
                    raw[name] = state
        decode = self._codec.decode
        states = {name: decode(name, state) for name, state in raw.items()}
        del raw
        live: dict[int, int] = {seq: 0 for seq, _ in records}
        tombs: dict[int, set[str]] = {}
        for name, seq in where.items():
            live[seq] += 1
            if name not in states:
                tombs.setdefault(seq, set()).add(name)
        self._states[partition] = states
        self._touched[partition] = set()
        self._where[partition] = where
        self._live[partition] = live
        self._tombs[partition] = tombs
        self._next_seq[partition] = (records[-1][0] + 1) if records else 0
        self._size[partition] = {seq: len(changes) for seq, changes in records}
        self._held[partition] = sum(len(changes) for _, changes in records)
        for seq, count in list(live.items()):
            if count == 0:
                self._drop_record(partition, seq)
        self._drop_leading_tombstones(partition)
        watermark = self._codec.watermark
        return max((watermark(state) for state in states.values()), default=-1)

    def drop_partition(self, partition: int) -> None:
        for store in (self._states, self._touched, self._where, self._live, self._tombs, self._next_seq, self._size,
                      self._held):
            store.pop(partition, None)

    def write_touched(self, partition: int, watermark: int) -> int:
        """Persist every touched state with ``wm = watermark`` as one record (or a few); returns records written."""
        touched = self._touched[partition]
        states = self._states[partition]
        set_watermark = self._codec.set_watermark
        for name in touched:
            set_watermark(states[name], watermark)
        written = self._write(partition, {name: states[name] for name in touched})
        touched.clear()
        return written + self._compact(partition)

    def _compact(self, partition: int) -> int:
        """Write again the live states of records less than half live, once the records kept hold more than
        twice the live states; returns records written. Only right after ``write_touched``: a state is written
        as it is, and none holds an event the batch's persist has not written yet."""
        live, size, where = self._live[partition], self._size[partition], self._where[partition]
        if self._held[partition] <= 2 * len(where) + _COMPACT_SLACK:
            return 0
        newest = self._next_seq[partition] - 1
        sparse = {seq for seq, count in live.items() if 2 * count < size[seq] and seq != newest}
        names = [name for name, seq in where.items() if seq in sparse]
        states = self._states[partition]
        return self._write(partition, {name: states.get(name) for name in names})  # None: a deletion stays one

    def write(self, partition: int, name: str) -> None:
        """Persist one state now, keeping its watermark (a change driven by the clock)."""
        self.write_many(partition, {name})

    def write_many(self, partition: int, names: set[str]) -> None:
        """Persist several states now as one record, keeping their watermarks.

        A state that events changed since the last ``write_touched`` is left to that call: written now
        with its old watermark, a replay after a crash would apply those events to it a second time.
        """
        states = self._states[partition]
        touched = self._touched[partition]
        self._write(partition, {name: states[name] for name in names if name in states and name not in touched})

    def delete(self, partition: int, name: str) -> None:
        """Forget a state, with a record that says so."""
        if self._states.get(partition, {}).pop(name, None) is not None:
            self._touched[partition].discard(name)
            self._write(partition, {name: None})

    def delete_many(self, partition: int, names: Iterable[str]) -> int:
        """Forget several states with one record that says so (expiry); returns how many were there."""
        states = self._states.get(partition, {})
        gone = [name for name in names if states.pop(name, None) is not None]
        if gone:
            touched = self._touched[partition]
            for name in gone:
                touched.discard(name)
            self._write(partition, dict.fromkeys(gone))
        return len(gone)

    def _write(self, partition: int, changes: dict[str, S | None]) -> int:
        if not changes:
            return 0
        names = list(changes)
        written = 0
        for start in range(0, len(names), _MAX_STATES_PER_RECORD):
            chunk = {name: changes[name] for name in names[start : start + _MAX_STATES_PER_RECORD]}
            seq = self._next_seq[partition]
            self._next_seq[partition] = seq + 1
            encode = self._codec.encode
            self._table[self._key(partition, seq)] = orjson.dumps(
                {name: None if state is None else encode(state) for name, state in chunk.items()}
            )
            written += 1
            self._size[partition][seq] = len(chunk)
            self._held[partition] += len(chunk)
            live = self._live[partition]
            where = self._where[partition]
            tombs = self._tombs[partition]
            live[seq] = 0
            for name, state in chunk.items():
                previous = where.pop(name, None)
                if previous is not None and previous in live:
                    tombs.get(previous, set()).discard(name)
                    live[previous] -= 1
                    if live[previous] == 0:
                        self._drop_record(partition, previous)
                # A deletion stays live too: dropping it early would let an older record that still
                # holds the key bring a stale state back on reload.
                where[name] = seq
                live[seq] += 1
                if state is None:
                    tombs.setdefault(seq, set()).add(name)
        self._drop_leading_tombstones(partition)
        return written

    def _drop_leading_tombstones(self, partition: int) -> None:
        """Drop the oldest records while all they still say is "deleted": nothing older can resurrect it."""
        live = self._live[partition]
        tombs = self._tombs[partition]
        where = self._where[partition]
        while live:
            oldest = next(iter(live))  # == min(live), without scanning every live record per write
            names = tombs.get(oldest, set())
            if live[oldest] != len(names):
                return
            for name in names:
                if where.get(name) == oldest:
                    del where[name]
            tombs.pop(oldest, None)
            self._drop_record(partition, oldest)

    def _drop_record(self, partition: int, seq: int) -> None:
        self._held[partition] -= self._size[partition].pop(seq, 0)
        self._live[partition].pop(seq, None)
        self._tombs[partition].pop(seq, None)
        key = self._key(partition, seq)
        if key in self._table:
            del self._table[key]
