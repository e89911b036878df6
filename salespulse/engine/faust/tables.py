"""Faust tables whose keys carry their partition: ``"<partition>|<name>"``.

Faust sends a table write to the changelog partition of the event being processed. A batch from
``take_events`` spans partitions, so that rule would misfile writes; here the key itself names the
partition, which is always the partition of the source events the value was computed from.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import StoreT
from yarl import URL

from salespulse.engine.faust.rocks import PartitionKeyedRocksDBStore


def table_key(partition: int, name: str) -> str:
    """The table key of cell ``name`` in ``partition``."""
    return f"{partition}|{name}"


class PartitionKeyedTable(faust.Table[str, bytes]):
    """A ``faust.Table`` that routes each changelog write by the partition prefix of its key."""

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
