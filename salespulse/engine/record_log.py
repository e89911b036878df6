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

**States kept encoded.** When the codec is an ``IndexedCodec`` (the families' lead and deal states), a
record holds each state as ``[wm, newest, watch, "<its JSON>"]`` (``families.state.StateIndex``), and the
store keeps that entry, not the decoded state, until the state is read. A partition then loads without
decoding a single state: the family's load-time indexes (the quiet leads' deadlines, the leads awaiting a
touch, the open deals) come from ``indexed`` and decode only the states they name. At most
``decoded_limit`` states per partition stay decoded (those written most recently); after each persist the
others go back to their entries, which are exactly what was just written. A record written before (a state
as a JSON object) still loads: the state is decoded once, to index it, and kept as an entry of that JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, TypeVar, overload

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key
from salespulse.engine.table_store import TableStore
from salespulse.families.state import JSON_CELLS, Cell, IndexedCodec, StateCodec

S = TypeVar("S")

_MAX_STATES_PER_RECORD = 1000  # keeps each record well under Kafka's 1 MB message limit
#: States the records kept may hold beyond twice the live ones before a compaction (so a small log never compacts).
_COMPACT_SLACK = _MAX_STATES_PER_RECORD
#: States per partition a store of an ``IndexedCodec`` keeps decoded: a few batches' worth of leads, so that
#: those an event reads again soon are not decoded again.
DECODED_LIMIT = 20_000


class RecordLog(TableStore[S]):
    """Working copy of per-key states of owned partitions, persisted as batch records."""

    @overload
    def __init__(self: RecordLog[Cell], table: MutableMapping[str, bytes], prefix: str) -> None: ...

    @overload
    def __init__(
        self, table: MutableMapping[str, bytes], prefix: str, codec: StateCodec[S], decoded_limit: int | None = None
    ) -> None: ...

    def __init__(
        self, table: MutableMapping[str, bytes], prefix: str, codec: Any = JSON_CELLS, decoded_limit: int | None = None
    ) -> None:
        super().__init__(table, prefix, codec)
        #: The codec's ``index`` when states are kept encoded until read (see the module's docstring).
        self._indexer: IndexedCodec[S] | None = codec if isinstance(codec, IndexedCodec) else None
        #: Per partition: name -> ``[wm, newest, watch, json]`` as last written (states kept encoded only).
        self._encoded: dict[int, dict[str, list[Any]]] = {}
        self._decoded_limit = DECODED_LIMIT if decoded_limit is None else decoded_limit
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
        records: list[tuple[int, dict[str, Any]]] = [
            (int(seq), changes) for seq, changes in rows_under(self._table, partition, self._prefix, decoded)
        ]
        records.sort(key=lambda item: item[0])
        raw: dict[str, Any] = {}  # name -> its latest state: a JSON object, or [wm, newest, watch, json]
        where: dict[str, int] = {}
        for seq, changes in records:
            for name, state in changes.items():
                where[name] = seq
                if state is None:
                    raw.pop(name, None)
                else:
                    raw[name] = state
        decode = self._codec.decode
        states: dict[str, S] = {}
        encoded: dict[str, list[Any]] = {}
        for name, state in raw.items():
            if isinstance(state, list):  # [wm, newest, watch, json]: decoded when read
                encoded[name] = state
            elif self._indexer is not None:  # a state as a JSON object (written before): made an entry once
                encoded[name] = self._entry(name, decode(name, state), state)
            else:
                states[name] = decode(name, state)
        del raw
        if self._indexer is None:  # a codec without an index keeps every state decoded
            for name, entry in encoded.items():
                states[name] = decode(name, orjson.loads(entry[3]))
            encoded = {}
        live: dict[int, int] = {seq: 0 for seq, _ in records}
        tombs: dict[int, set[str]] = {}
        for name, seq in where.items():
            live[seq] += 1
            if name not in states and name not in encoded:
                tombs.setdefault(seq, set()).add(name)
        self._states[partition] = states
        self._encoded[partition] = encoded
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
        return max(
            max((watermark(state) for state in states.values()), default=-1),
            max((int(entry[0]) for entry in encoded.values()), default=-1),
        )

    def drop_partition(self, partition: int) -> None:
        for store in (self._states, self._touched, self._where, self._live, self._tombs, self._next_seq, self._size,
                      self._held, self._encoded):
            store.pop(partition, None)

    # -- reading: a state kept encoded is decoded when first read ----------------------------------

    def get(self, partition: int, name: str) -> S | None:
        states = self._states.get(partition)
        if states is None:
            return None
        found = states.get(name)
        if found is None:
            entry = self._encoded[partition].get(name)
            if entry is not None:
                found = states[name] = self._codec.decode(name, orjson.loads(entry[3]))
        return found

    def cell(self, partition: int, name: str) -> S:
        found = self.get(partition, name)
        if found is None:
            found = self._states[partition][name] = self._codec.new(name)
        return found

    def items(self, partition: int) -> Iterator[tuple[str, S]]:
        """Every state, each kept encoded decoded now (and kept decoded until the next persist)."""
        for name in list(self._encoded.get(partition, ())):
            self.get(partition, name)
        return super().items(partition)

    def indexed(self, partition: int) -> Iterator[tuple[str, float, float | None]]:
        """``(name, newest, watch)`` of every state: a decoded one's from its codec, an encoded one's as written."""
        found = list(super().indexed(partition))
        states = self._states.get(partition, {})
        found.extend(
            (name, entry[1], entry[2]) for name, entry in self._encoded.get(partition, {}).items() if name not in states
        )
        return iter(found)

    # -- writing -------------------------------------------------------------------------------------

    def _value(self, name: str, state: S) -> Any:
        """A state as its record holds it: its JSON object, or ``[wm, newest, watch, json]`` if kept encoded."""
        encoded = self._codec.encode(state)
        return encoded if self._indexer is None else self._entry(name, state, encoded)

    def _entry(self, name: str, state: S, json_object: Cell) -> list[Any]:
        """``[wm, newest, watch, json]`` of a state whose JSON object is ``json_object`` (an ``IndexedCodec`` only)."""
        assert self._indexer is not None
        newest, watch = self._indexer.index(name, state)
        return [self._codec.watermark(state), newest, watch, orjson.dumps(json_object).decode()]

    def write_touched(self, partition: int, watermark: int) -> int:
        """Persist every touched state with ``wm = watermark`` as one record (or a few); returns records written."""
        touched = self._touched[partition]
        states = self._states[partition]
        set_watermark = self._codec.set_watermark
        for name in touched:
            set_watermark(states[name], watermark)
        written = self._write(partition, {name: self._value(name, states[name]) for name in touched})
        if self._indexer is not None:
            for name in touched:  # the most recently written go last: the last to go back to their entries
                states[name] = states.pop(name)
        touched.clear()
        written += self._compact(partition)
        self._evict(partition)
        return written

    def _evict(self, partition: int) -> None:
        """Keep at most ``decoded_limit`` states decoded: the others (least recently written or read first) go
        back to their entries, which hold them exactly (each was written as it is, or not changed since read)."""
        states = self._states[partition]
        excess = len(states) - self._decoded_limit
        if self._indexer is None or excess <= 0:
            return
        encoded, touched = self._encoded[partition], self._touched[partition]
        victims: list[str] = []
        for name in states:
            if name in encoded and name not in touched:
                victims.append(name)
                if len(victims) == excess:
                    break
        for name in victims:
            del states[name]

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
        if self._indexer is not None:  # each live state as last written: no encoding again
            encoded = self._encoded[partition]
            return self._write(partition, {name: encoded.get(name) for name in names})  # None: a deletion stays one
        states = self._states[partition]
        return self._write(partition, {name: None if name not in states else self._value(name, states[name]) for name in names})

    def write(self, partition: int, name: str) -> None:
        """Persist one state now, keeping its watermark (a change driven by the clock)."""
        self.write_many(partition, {name})

    def write_many(self, partition: int, names: set[str]) -> None:
        """Persist several states now as one record, keeping their watermarks.

        A state that events changed since the last ``write_touched`` is left to that call: written now
        with its old watermark, a replay after a crash would apply those events to it a second time.
        A state kept encoded and not read since it was written has not changed: it is left as it is.
        """
        states = self._states[partition]
        touched = self._touched[partition]
        self._write(partition, {
            name: self._value(name, states[name]) for name in names if name in states and name not in touched
        })

    def _forget(self, partition: int, name: str) -> bool:
        """Drop a state from memory, decoded or encoded; True if it was there."""
        decoded = self._states.get(partition, {}).pop(name, None) is not None
        return self._encoded.get(partition, {}).pop(name, None) is not None or decoded

    def delete(self, partition: int, name: str) -> None:
        """Forget a state, with a record that says so."""
        if self._forget(partition, name):
            self._touched[partition].discard(name)
            self._write(partition, {name: None})

    def delete_many(self, partition: int, names: Iterable[str]) -> int:
        """Forget several states with one record that says so (expiry); returns how many were there."""
        gone = [name for name in names if self._forget(partition, name)]
        if gone:
            touched = self._touched[partition]
            for name in gone:
                touched.discard(name)
            self._write(partition, dict.fromkeys(gone))
        return len(gone)

    def _write(self, partition: int, changes: dict[str, Any]) -> int:
        """Write states as their records hold them (``_value``; None: deleted), a record per 1,000."""
        if not changes:
            return 0
        names = list(changes)
        written = 0
        for start in range(0, len(names), _MAX_STATES_PER_RECORD):
            chunk = {name: changes[name] for name in names[start : start + _MAX_STATES_PER_RECORD]}
            seq = self._next_seq[partition]
            self._next_seq[partition] = seq + 1
            self._table[self._key(partition, seq)] = orjson.dumps(chunk)
            if self._indexer is not None:
                encoded = self._encoded[partition]
                for name, value in chunk.items():
                    if value is None:
                        encoded.pop(name, None)
                    else:
                        encoded[name] = value
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
