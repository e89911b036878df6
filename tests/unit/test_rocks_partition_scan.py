"""A partition's rows are found by scanning its own RocksDB database, not every partition's (and on the
in-memory store, by one pass over its keys)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest

from salespulse.engine.faust.rocks import PartitionKeyedRocksDBStore
from salespulse.engine.faust.tables import PartitionKeyedTable, partition_keys, rows_under


def filled(tmp_path: Path, store: str) -> PartitionKeyedTable:
    app = faust.App("scan-test", broker="kafka://127.0.0.1:9", store=store, tabledir=tmp_path)
    table = PartitionKeyedTable(app, name="state", partitions=4, key_type=str, value_type=bytes)
    for partition in range(4):
        for prefix in ("activity", "outreach"):
            table.data[f"{partition}|{prefix}|{partition}-a"] = b'{"wm": %d}' % partition
    return table


@pytest.fixture
def table(tmp_path: Path) -> PartitionKeyedTable:
    table = filled(tmp_path, "rocksdb://")
    assert isinstance(table.data, PartitionKeyedRocksDBStore)
    return table


def test_a_partitions_keys_come_from_its_database_alone(
    table: PartitionKeyedTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = table.data
    assert isinstance(store, PartitionKeyedRocksDBStore)
    scanned: list[Any] = []
    visible = store._visible_keys

    def recording(db: Any) -> Iterator[bytes]:
        scanned.append(db)
        return visible(db)

    monkeypatch.setattr(store, "_visible_keys", recording)
    assert partition_keys(table, 2) == {"activity": ["2|activity|2-a"], "outreach": ["2|outreach|2-a"]}
    assert scanned == [store._db_for_partition(2)]


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_rows_under_reads_a_prefix_of_one_partition(tmp_path: Path, store: str) -> None:
    table = filled(tmp_path, store)
    assert list(rows_under(table, 3, "outreach", None)) == [("3-a", {"wm": 3})]
    assert partition_keys(table, 1) == {"activity": ["1|activity|1-a"], "outreach": ["1|outreach|1-a"]}
