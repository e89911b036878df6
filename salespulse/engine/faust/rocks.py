"""Faust's RocksDB store for tables whose keys carry their partition (``"<partition>|<name>"``).

Faust's ``rocksdb://`` store files a write under the partition of the event being processed
(``current_event()``), and asserts there is one. salespulse writes its table from a batch agent
below Faust's per-message stream, where there is no current event; its keys name their partition
instead (``tables.table_key``), so every read and write here goes to that partition's database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from faust.stores.rocksdb import Store


def key_partition(key: bytes) -> int:
    """The partition a serialized table key names (JSON string ``"<partition>|..."``, or raw)."""
    return int(key[1 if key[:1] == b'"' else 0 : key.index(b"|")])


class PartitionKeyedRocksDBStore(Store):
    """``rocksdb://`` store that routes each key to the database of the partition it names."""

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = key_partition(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(key_partition(key)).get(key)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def keys_of(self, partition: int) -> Iterator[Any]:
        """The decoded keys of one partition's database: a scan of that database alone."""
        for key in self._visible_keys(self._db_for_partition(partition)):
            yield self._decode_key(key)

    def _dbs_for_key(self, key: bytes) -> Iterable[Any]:
        return [self._db_for_partition(key_partition(key))]
