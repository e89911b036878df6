"""Durable ``event_id`` deduplication per partition, one changelog write per batch, fixed width per id.

Redeliveries of an event (a CRM retrying a webhook) carry the same ``event_id`` and key, so they
land in the same partition at a new offset. The index maps ``digest(event_id) -> offset of first
sight``; an event is new if unseen, a *replay of the same message* (process again, the cells'
watermarks decide) if seen at this very offset, and a duplicate otherwise. Each batch's new ids are
written as one record ``"<p>|dedup|<lowest offset among them>"`` *before* the batch's cells, so a
crash can never leave counted cells whose ids are forgotten. Records older than the horizon (wall
clock) are deleted.

An id is kept as the 8-byte BLAKE2b digest of its UTF-8 bytes (an int in memory, 16 bytes with its
offset in the record), not as its string: a month of ids (a million per worker) took ~200 bytes
each as strings in the index, the record list and the JSON records. Two ids of one partition
sharing a digest within the horizon would make the second a duplicate: with n ids remembered the
chance is about n² / 2⁶⁵ (3 · 10⁻⁸ for a million).
"""

from __future__ import annotations

import struct
import time
from array import array
from collections.abc import MutableMapping
from hashlib import blake2b
from typing import Any

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key

_PREFIX = "dedup"
#: Record format: magic, write time (float64), then (digest uint64, offset int64) per id, little endian.
_MAGIC = b"DD1"
_HEADER = struct.Struct("<3sd")
_ENTRY = struct.Struct("<Qq")


def digest(event_id: str) -> int:
    """The 64-bit id kept for ``event_id``."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "little")


def encode_record(written_at: float, ids: dict[int, int]) -> bytes:
    """One batch's new ids (digest -> offset) as a changelog value."""
    entry = _ENTRY.pack
    return _HEADER.pack(_MAGIC, written_at) + b"".join([entry(key, offset) for key, offset in ids.items()])


def decode_record(raw: bytes | dict[str, Any]) -> tuple[float, dict[int, int]]:
    """(write time, digest -> offset) of a record; also reads the JSON records of earlier versions (as bytes,
    or already decoded by ``tables.decode_rows``)."""
    if isinstance(raw, dict) or raw[:3] != _MAGIC:
        record = raw if isinstance(raw, dict) else orjson.loads(raw)
        return record["t"], {digest(event_id): offset for event_id, offset in record["ids"].items()}
    _, written_at = _HEADER.unpack_from(raw)
    return written_at, {key: offset for key, offset in _ENTRY.iter_unpack(memoryview(raw)[_HEADER.size :])}


class DedupIndex:
    """In-memory ``digest -> offset`` index of owned partitions, backed by a changelogged table."""

    def __init__(self, table: MutableMapping[str, bytes], horizon_s: float) -> None:
        self._table = table
        self._horizon_s = horizon_s
        self._seen: dict[int, dict[int, int]] = {}
        self._records: dict[int, dict[int, tuple[float, array[int]]]] = {}
        self._pending: dict[int, dict[int, int]] = {}

    @property
    def prefix(self) -> str:
        """The prefix of this store's table rows (``"<partition>|<prefix>|<name>"``)."""
        return _PREFIX

    @property
    def table(self) -> MutableMapping[str, bytes]:
        """The table every store of the worker shares."""
        return self._table

    def load_partition(self, partition: int, decoded: DecodedRows | None = None) -> int:
        """Load a partition's records (from the table, or from its rows ``decoded`` ahead); returns the highest
        offset they contain (or -1)."""
        seen: dict[int, int] = {}
        records: dict[int, tuple[float, array[int]]] = {}
        for first_offset, record in rows_under(self._table, partition, _PREFIX, decoded):
            written_at, ids = decode_record(record)
            records[int(first_offset)] = (written_at, array("Q", ids))
            seen.update(ids)
        self._seen[partition] = seen
        self._records[partition] = records
        self._pending[partition] = {}
        return max(seen.values(), default=-1)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition this worker no longer owns."""
        for store in (self._seen, self._records, self._pending):
            store.pop(partition, None)

    def admit(self, partition: int, event_id: str, offset: int) -> bool:
        """True if the event at ``offset`` is to be processed; False if it is a redelivered duplicate."""
        key = digest(event_id)
        seen = self._seen[partition]
        first = seen.get(key)
        if first is None:
            seen[key] = offset
            self._pending[partition][key] = offset
            return True
        return first == offset

    def write_pending(self, partition: int, now: float | None = None) -> bool:
        """Persist the ids admitted since the last call as one record; False if there were none."""
        pending = self._pending[partition]
        if not pending:
            return False
        # Keyed by the lowest offset of its own ids: unique, since an id is pending only at first
        # sight. (The batch's first offset is not: a replay read as a longer batch would overwrite
        # the record of the first attempt and forget its ids after the next reload.)
        first_offset = min(pending.values())
        written_at = time.time() if now is None else now
        self._table[table_key(partition, f"{_PREFIX}|{first_offset}")] = encode_record(written_at, pending)
        self._records[partition][first_offset] = (written_at, array("Q", pending))
        self._pending[partition] = {}
        return True

    def expire(self, partition: int, now: float | None = None) -> int:
        """Delete records older than the horizon; returns how many ids were forgotten."""
        cutoff = (time.time() if now is None else now) - self._horizon_s
        records = self._records[partition]
        seen = self._seen[partition]
        forgotten = 0
        for first_offset, (written_at, ids) in list(records.items()):
            if written_at < cutoff:
                for key in ids:
                    seen.pop(key, None)
                forgotten += len(ids)
                del records[first_offset]
                name = table_key(partition, f"{_PREFIX}|{first_offset}")
                if name in self._table:
                    del self._table[name]
        return forgotten

    def size(self, partition: int) -> int:
        """How many ids a partition remembers."""
        return len(self._seen.get(partition, {}))
