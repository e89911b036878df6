"""Durable ``event_id`` deduplication per partition, one changelog write per batch.

Redeliveries of an event (a CRM retrying a webhook) carry the same ``event_id`` and key, so they
land in the same partition at a new offset. The index maps ``event_id -> offset of first sight``;
an event is new if unseen, a *replay of the same message* (process again, the cells' watermarks
decide) if seen at this very offset, and a duplicate otherwise. Each batch's new ids are written as
one record ``"<p>|dedup|<lowest offset among them>"`` *before* the batch's cells, so a crash can never leave
counted cells whose ids are forgotten. Records older than the horizon (wall clock) are deleted.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping

import orjson

from salespulse.engine.faust.tables import DecodedRows, rows_under, table_key

_PREFIX = "dedup"


class DedupIndex:
    """In-memory ``event_id -> offset`` index of owned partitions, backed by a changelogged table."""

    def __init__(self, table: MutableMapping[str, bytes], horizon_s: float) -> None:
        self._table = table
        self._horizon_s = horizon_s
        self._seen: dict[int, dict[str, int]] = {}
        self._records: dict[int, dict[int, tuple[float, list[str]]]] = {}
        self._pending: dict[int, dict[str, int]] = {}

    @property
    def table(self) -> MutableMapping[str, bytes]:
        """The table every store of the worker shares."""
        return self._table

    def load_partition(self, partition: int, decoded: DecodedRows | None = None) -> int:
        """Load a partition's records (from the table, or from its rows ``decoded`` ahead); returns the highest
        offset they contain (or -1)."""
        seen: dict[str, int] = {}
        records: dict[int, tuple[float, list[str]]] = {}
        for first_offset, record in rows_under(self._table, partition, _PREFIX, decoded):
            records[int(first_offset)] = (record["t"], list(record["ids"]))
            seen.update(record["ids"])
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
        first = self._seen[partition].get(event_id)
        if first is None:
            self._seen[partition][event_id] = offset
            self._pending[partition][event_id] = offset
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
        self._table[table_key(partition, f"{_PREFIX}|{first_offset}")] = orjson.dumps(
            {"t": written_at, "ids": pending}
        )
        self._records[partition][first_offset] = (written_at, list(pending))
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
                for event_id in ids:
                    seen.pop(event_id, None)
                forgotten += len(ids)
                del records[first_offset]
                key = table_key(partition, f"{_PREFIX}|{first_offset}")
                if key in self._table:
                    del self._table[key]
        return forgotten

    def size(self, partition: int) -> int:
        """How many ids a partition remembers."""
        return len(self._seen.get(partition, {}))
