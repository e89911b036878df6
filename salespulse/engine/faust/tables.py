"""Faust tables whose keys carry their partition: ``"<partition>|<name>"``.

Faust sends a table write to the changelog partition of the event being processed. A batch from
``take_events`` spans partitions, so that rule would misfile writes; here the key itself names the
partition, which is always the partition of the source events the value was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import faust
import orjson
from faust.types import StoreT
from yarl import URL

from salespulse.engine.faust.rocks import PartitionKeyedRocksDBStore

#: A partition's table rows, decoded ahead (``decode_rows``): full table key -> the JSON value.
DecodedRows = Mapping[str, Any]


def table_key(partition: int, name: str) -> str:
    """The table key of cell ``name`` in ``partition``."""
    return f"{partition}|{name}"


def partition_rows(table: Mapping[str, bytes], partition: int) -> dict[str, bytes]:
    """The raw rows of one partition (every prefix), read on the event loop: a scan of the keys, no decoding."""
    return read_rows(table, (key for keys in partition_keys(table, partition).values() for key in keys))


def keys_of(table: Mapping[str, bytes], partition: int) -> list[str]:
    """The keys of ``partition``'s rows: from that partition's database alone when the table is on RocksDB (its
    ``keys()`` scans every assigned partition's database, and ``list(keys())`` does so twice, counting first)."""
    wanted = f"{partition}|"
    scanned = table.keys_of(partition) if isinstance(table, PartitionKeyedTable) else iter(table)
    return [key for key in scanned if isinstance(key, str) and key.startswith(wanted)]


def partition_keys(table: Mapping[str, bytes], partition: int) -> dict[str, list[str]]:
    """The keys of one partition's rows by prefix (``"<partition>|<prefix>|<name>"``): a scan, no value read."""
    found: dict[str, list[str]] = {}
    for key in keys_of(table, partition):
        found.setdefault(key.split("|", 2)[1], []).append(key)
    return found


def read_rows(table: Mapping[str, bytes], keys: Iterable[str]) -> dict[str, bytes]:
    """The raw values of ``keys`` (those still present)."""
    rows: dict[str, bytes] = {}
    for key in keys:
        raw = table.get(key)
        if raw is not None:
            rows[key] = raw
    return rows


def decode_value(raw: bytes) -> Any:
    """A row's JSON value, or its bytes when it is not JSON (the dedup index's binary records)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def decode_rows(rows: Mapping[str, bytes]) -> dict[str, Any]:
    """The rows' values (``decode_value``); pure, so it may run in a thread while the loop serves requests."""
    return {key: decode_value(raw) for key, raw in rows.items()}


def rows_under(
    table: Mapping[str, bytes], partition: int, prefix: str, decoded: DecodedRows | None
) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of the rows ``"<partition>|<prefix>|<name>"``: from ``decoded`` when given (see
    ``BatchProcessor.load``), else read and decoded from ``table`` now."""
    wanted = f"{partition}|{prefix}|"
    if decoded is not None:
        for key, value in decoded.items():
            if key.startswith(wanted):
                yield key[len(wanted):], value
        return
    for key in keys_of(table, partition):
        if key.startswith(wanted):
            raw = table.get(key)
            if raw is not None:
                yield key[len(wanted):], decode_value(raw)


class PartitionKeyedTable(faust.Table[str, bytes]):
    """A ``faust.Table`` that routes each changelog write by the partition prefix of its key."""

    def keys_of(self, partition: int) -> Iterable[str]:
        """The keys that may be ``partition``'s: its RocksDB database's, or every key of the in-memory store."""
        store = self.data
        if isinstance(store, PartitionKeyedRocksDBStore):
            return store.keys_of(partition)
        return list(store.keys())

    def partition_for_key(self, key: Any) -> int:
        return int(str(key).partition("|")[0])

    def _new_store_by_url(self, url: str | URL) -> StoreT[str, bytes]:
        if URL(str(url)).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        return PartitionKeyedRocksDBStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )
