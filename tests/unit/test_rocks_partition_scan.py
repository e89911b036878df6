"""A partition's rows on the RocksDB store are found by scanning its own database, not every partition's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest

from salespulse.engine.faust.rocks import PartitionKeyedRocksDBStore
from salespulse.engine.faust.tables import PartitionKeyedTable, partition_keys, rows_under


@pytest.fixture
def table(tmp_path: Path) -> PartitionKeyedTable:
    app = faust.App("scan-test", broker="kafka://127.0.0.1:9", store="rocksdb://", tabledir=tmp_path)
    table = PartitionKeyedTable(app, name="state", partitions=4, key_type=str, value_type=bytes)
    assert isinstance(table.data, PartitionKeyedRocksDBStore)
    for partition in range(4):
        for prefix in ("activity", "outreach"):
            table.data[f"{partition}|{prefix}|{partition}-a"] = b'{"wm": %d}' % partition
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


def test_rows_under_reads_a_prefix_of_one_partition(table: PartitionKeyedTable) -> None:
    assert list(rows_under(table, 3, "outreach", None)) == [("3-a", {"wm": 3})]
