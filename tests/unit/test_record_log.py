"""RecordLog: per-key states persisted as one record per batch, replayed in order, compacted."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collections.abc import Callable, MutableMapping
from typing import Any

from salespulse.engine import record_log
from salespulse.engine.record_log import RecordLog
from salespulse.families.state import Cell, JsonCells, StateIndex
from tests.unit.log_support import RecordingTable, crash_mid_write


class IndexedCells(JsonCells):
    """JSON cells whose store keeps them encoded until read: newest ``v``, watched when ``v`` is even."""

    def index(self, name: str, state: Cell) -> StateIndex:
        v = float(state.get("v", 0))
        return v, v if v % 2 == 0 else None


Make = Callable[[MutableMapping[str, bytes]], RecordLog[Any]]
#: Every test runs on a log that keeps its states decoded, and on one that keeps them encoded until read with
#: room for two decoded states (so that states go back to their entries after nearly every write).
LOGS = pytest.mark.parametrize("make", [
    pytest.param(lambda table: RecordLog(table, "leads"), id="decoded"),
    pytest.param(lambda table: RecordLog(table, "leads", IndexedCells(), decoded_limit=2), id="encoded"),
])


@LOGS
def test_a_batch_of_changed_states_is_one_table_write_and_reloads_exactly(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(3)
    for i in range(50):
        log.cell(3, f"L{i}")["created"] = i
        log.touch(3, f"L{i}")
    assert log.write_touched(3, watermark=99) == 1
    assert list(table) == ["3|leads|000000000000"]
    again = make(table)
    assert again.load_partition(3) == 99
    assert {name: state["created"] for name, state in again.items(3)} == {f"L{i}": i for i in range(50)}


@LOGS
def test_later_records_win_and_fully_superseded_records_are_deleted(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    for name in ("a", "b"):
        log.cell(0, name)["v"] = 1
        log.touch(0, name)
    log.write_touched(0, 1)
    log.cell(0, "a")["v"] = 2
    log.touch(0, "a")
    log.write_touched(0, 2)
    assert sorted(table) == ["0|leads|000000000000", "0|leads|000000000001"]  # b still lives in record 0
    log.cell(0, "b")["v"] = 2
    log.touch(0, "b")
    log.write_touched(0, 3)
    assert sorted(table) == ["0|leads|000000000001", "0|leads|000000000002"]
    reloaded = make(table)
    reloaded.load_partition(0)
    assert {n: s["v"] for n, s in reloaded.items(0)} == {"a": 2, "b": 2}


@LOGS
def test_a_crash_that_loses_the_last_record_reloads_the_previous_states(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    log.cell(0, "a")["v"] = 1
    log.touch(0, "a")
    log.write_touched(0, 5)
    before = dict(table)
    log.cell(0, "a")["v"] = 2
    log.touch(0, "a")
    log.write_touched(0, 9)
    reloaded = make(before)  # the second record never reached the changelog
    assert reloaded.load_partition(0) == 5
    assert reloaded.get(0, "a") == {"v": 1, "wm": 5}


@LOGS
def test_clock_driven_writes_keep_the_watermark_and_deletes_survive_reload(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(1)
    for name in ("a", "b", "c"):
        log.cell(1, name)["alert"] = None
        log.touch(1, name)
    log.write_touched(1, 7)
    log.cell(1, "a")["alert"] = "firing"
    log.cell(1, "b")["alert"] = "firing"
    log.write_many(1, {"a", "b"})
    log.delete(1, "c")
    reloaded = make(table)
    reloaded.load_partition(1)
    assert {n: (s["alert"], s["wm"]) for n, s in reloaded.items(1)} == {"a": ("firing", 7), "b": ("firing", 7)}
    # record 0 is superseded (a, b rewritten, c deleted) and gone; the deletion record stays until no
    # older record is left (liveness does not track which keys an older record physically holds).
    assert sorted(table) == ["1|leads|000000000001", "1|leads|000000000002"]


@LOGS
def test_partitions_are_independent_and_new_records_continue_the_sequence_after_reload(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    for p in (0, 1):
        log.load_partition(p)
        log.cell(p, "x")["p"] = p
        log.touch(p, "x")
        log.write_touched(p, 0)
    reloaded = make(table)
    reloaded.load_partition(0)
    reloaded.cell(0, "y")["p"] = 0
    reloaded.touch(0, "y")
    reloaded.write_touched(0, 1)
    assert sorted(table) == ["0|leads|000000000000", "0|leads|000000000001", "1|leads|000000000000"]
    assert reloaded.get(1, "x") is None  # partition 1 not loaded here


@LOGS
def test_a_deleted_state_never_comes_back_from_an_older_record_still_alive(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    for name in ("old", "keeper"):
        log.cell(0, name)["v"] = 1
        log.touch(0, name)
    log.write_touched(0, 1)  # record 0 holds old and keeper
    log.cell(0, "old")["v"] = 2
    log.touch(0, "old")
    log.write_touched(0, 2)  # record 1: old v2 (record 0 still alive for keeper)
    log.delete(0, "old")  # record 2: old deleted
    reloaded = make(table)
    reloaded.load_partition(0)
    assert reloaded.get(0, "old") is None, "record 0's stale 'old' must not come back"
    assert reloaded.get(0, "keeper") == {"v": 1, "wm": 1}
    reloaded.cell(0, "keeper")["v"] = 3
    reloaded.touch(0, "keeper")
    reloaded.write_touched(0, 3)  # record 0 now superseded; the deletion record then holds nothing needed
    assert sorted(table) == ["0|leads|000000000003"]
    again = make(table)
    again.load_partition(0)
    assert {n: s["v"] for n, s in again.items(0)} == {"keeper": 3}


@LOGS
def test_deleting_many_states_is_one_record_and_none_comes_back_on_reload(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    for i in range(30):  # one record per state: the older ones stay alive until the deletion
        log.cell(0, f"L{i}")["v"] = i
        log.touch(0, f"L{i}")
        log.write_touched(0, i)
    writes_before = set(table)
    assert log.delete_many(0, [f"L{i}" for i in range(25)] + ["never-there"]) == 25
    new_records = set(table) - writes_before
    assert len(new_records) <= 1  # one deletion record (or none left: it only said "deleted" of the oldest)
    reloaded = make(table)
    reloaded.load_partition(0)
    assert {n: s["v"] for n, s in reloaded.items(0)} == {f"L{i}": i for i in range(25, 30)}
    # the records that held only deleted states are gone from the table
    assert len(table) == 5 + len(new_records)


@LOGS
def test_a_state_deleted_among_many_and_touched_in_the_same_batch_is_not_written_back(make: Make) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    for name in ("a", "b"):
        log.cell(0, name)["v"] = 1
        log.touch(0, name)
    log.write_touched(0, 1)
    log.cell(0, "a")["v"] = 2
    log.touch(0, "a")
    log.delete_many(0, ["a"])
    log.write_touched(0, 2)
    reloaded = make(table)
    reloaded.load_partition(0)
    assert {n: s["v"] for n, s in reloaded.items(0)} == {"b": 1}


ops = st.lists(
    st.tuples(st.sampled_from(["write", "delete", "delete_many", "reload"]), st.lists(st.sampled_from("abcdefg"), max_size=4)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
@LOGS
def test_any_writes_and_deletes_reload_to_the_latest_states_and_nothing_else(make: Make, steps: list[tuple[str, list[str]]]) -> None:
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    expected: dict[str, int] = {}
    for n, (op, names) in enumerate(steps):
        if op == "write":
            for name in names:
                log.cell(0, name)["v"] = n
                log.touch(0, name)
                expected[name] = n
            log.write_touched(0, n)
        elif op == "delete":
            for name in names:
                log.delete(0, name)
                expected.pop(name, None)
        elif op == "delete_many":
            log.delete_many(0, names)
            for name in names:
                expected.pop(name, None)
        else:
            log = make(table)
            log.load_partition(0)
        reloaded = make(table)
        reloaded.load_partition(0)
        assert {name: state["v"] for name, state in reloaded.items(0)} == expected
        assert_oldest_record_holds_a_latest_state(table)


def assert_oldest_record_holds_a_latest_state(table: dict[str, bytes]) -> None:
    """Compaction: the oldest record left is never one that only says "deleted" (nothing older needs it)."""
    records = [orjson.loads(table[key]) for key in sorted(table)]
    if not records:
        return
    later = {name for record in records[1:] for name in record}
    latest_here = [name for name in records[0] if name not in later]
    assert any(records[0][name] is not None for name in latest_here), records


def _held_states(table: dict[str, bytes], prefix: str = "leads") -> int:
    """The states (and deletions) written in the records the table still holds."""
    return sum(len(orjson.loads(value)) for key, value in table.items() if key.split("|")[1] == prefix)


@LOGS
def test_a_log_of_often_changed_states_is_compacted_to_about_twice_the_live_states(make: Make) -> None:
    rnd = random.Random(7)
    table: dict[str, bytes] = {}
    log = make(table)
    log.load_partition(0)
    for i in range(300):
        log.cell(0, f"L{i}")["v"] = 0
        log.touch(0, f"L{i}")
    log.write_touched(0, 0)
    expected = {f"L{i}": {"v": 0, "wm": 0} for i in range(300)}
    for batch in range(1, 1500):  # a few states change per batch: without compaction the log keeps growing
        for name in rnd.sample(sorted(expected), 3):
            log.cell(0, name)["v"] = batch
            log.touch(0, name)
            expected[name] = {"v": batch, "wm": batch}
        log.write_touched(0, batch)
        assert _held_states(table) <= 2 * 300 + record_log._COMPACT_SLACK + 3
    reloaded = make(table)
    assert reloaded.load_partition(0) == 1499
    assert dict(reloaded.items(0)) == expected


@LOGS
def test_a_crash_during_a_compacting_write_reloads_each_state_as_before_or_after_the_batch(make: Make, 
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(record_log, "_COMPACT_SLACK", 0)  # compact as soon as the log holds twice the live states
    compactions = 0
    compact = RecordLog._compact

    def counted(self: RecordLog[dict[str, int]], partition: int) -> int:
        nonlocal compactions
        written = compact(self, partition)
        compactions += written > 0
        return written

    monkeypatch.setattr(RecordLog, "_compact", counted)
    for seed in range(100):
        rnd = random.Random(seed)
        table = RecordingTable()
        log = make(table)
        log.load_partition(0)
        committed: dict[str, dict[str, int]] = {}
        for batch in range(rnd.randint(5, 40)):
            before = dict(committed)
            after = dict(committed)
            for name in rnd.sample([f"L{i}" for i in range(20)], rnd.randint(1, 6)):
                if name in after and rnd.random() < 0.2:
                    log.delete(0, name)  # a deletion is written at once, as expiry does
                    del after[name], before[name]
                    continue
                log.cell(0, name)["v"] = batch
                log.touch(0, name)
                after[name] = {"v": batch, "wm": batch}
            landed = crash_mid_write(table, lambda: log.write_touched(0, batch), rnd)
            restarted = make(landed)
            restarted.load_partition(0)
            found = dict(restarted.items(0))
            assert set(found) <= set(before) | set(after), (seed, batch)
            for name, state in found.items():
                assert state in (before.get(name), after.get(name)), (seed, batch, name)
            for name in set(before) & set(after):
                if before[name] == after[name]:
                    assert found.get(name) == before[name], (seed, batch, name)  # untouched: never lost
            committed = after
    assert compactions >= 25  # so the crashes above land in the middle of compacting writes too


# --- states kept encoded until read (an IndexedCodec) ------------------------------------------------------------


class CountingCells(IndexedCells):
    """``IndexedCells`` that counts its decodes."""

    def __init__(self) -> None:
        self.decodes = 0

    def decode(self, name: str, raw: Cell) -> Cell:
        self.decodes += 1
        return raw


def _written(log: RecordLog[Any], partition: int, values: dict[str, int], watermark: int) -> None:
    if partition not in log.partitions:
        log.load_partition(partition)
    for name, v in values.items():
        log.cell(partition, name)["v"] = v
        log.touch(partition, name)
    log.write_touched(partition, watermark)


def test_a_reloaded_partition_decodes_no_state_until_one_is_read() -> None:
    table: dict[str, bytes] = {}
    _written(RecordLog(table, "leads", IndexedCells()), 0, {f"L{i}": i for i in range(100)}, 7)
    codec = CountingCells()
    log = RecordLog(table, "leads", codec)
    assert log.load_partition(0) == 7
    assert codec.decodes == 0 and log.loaded(0) == {}
    assert sorted(log.indexed(0)) == sorted((f"L{i}", float(i), float(i) if i % 2 == 0 else None) for i in range(100))
    assert log.get(0, "L42") == {"v": 42, "wm": 7}
    assert codec.decodes == 1 and list(log.loaded(0)) == ["L42"]
    assert log.get(0, "L42") is log.get(0, "L42") and codec.decodes == 1  # decoded once, then kept


def test_the_index_of_a_state_changed_since_its_write_is_the_changed_one() -> None:
    table: dict[str, bytes] = {}
    log = RecordLog(table, "leads", IndexedCells())
    log.load_partition(0)
    _written(log, 0, {"a": 1}, 1)
    log.cell(0, "a")["v"] = 4  # changed in the batch being staged
    assert list(log.indexed(0)) == [("a", 4.0, 4.0)]


def test_states_past_the_decoded_limit_go_back_to_their_entries_after_a_persist_and_read_back_equal() -> None:
    table: dict[str, bytes] = {}
    codec = CountingCells()
    log = RecordLog(table, "leads", codec, decoded_limit=10)
    log.load_partition(0)
    _written(log, 0, {f"L{i}": i for i in range(20)}, 1)
    _written(log, 0, {f"L{i}": i for i in range(20, 30)}, 1)
    assert sorted(log.loaded(0)) == sorted(f"L{i}" for i in range(20, 30))  # the most recently written stay
    _written(log, 0, {"L3": 103}, 2)
    assert "L3" in log.loaded(0) and len(log.loaded(0)) == 10  # read and written again: among the recent
    assert {name: state["v"] for name, state in log.items(0)} == {f"L{i}": 103 if i == 3 else i for i in range(30)}
    reloaded = RecordLog(table, "leads", IndexedCells())
    reloaded.load_partition(0)
    assert dict(reloaded.items(0)) == dict(log.items(0))


def test_records_of_states_as_json_objects_still_load_and_are_rewritten_as_entries_when_changed() -> None:
    table: dict[str, bytes] = {}
    _written(RecordLog(table, "leads"), 0, {"old": 1, "kept": 3}, 5)  # the form written before (a JSON object)
    log = RecordLog(table, "leads", IndexedCells())
    assert log.load_partition(0) == 5
    assert log.loaded(0) == {}  # decoded once to be indexed, then kept as entries like the others
    assert sorted(log.indexed(0)) == [("kept", 3.0, None), ("old", 1.0, None)]
    _written(log, 0, {"old": 2}, 6)
    newest = orjson.loads(table[max(table)])
    assert newest == {"old": [6, 2.0, 2.0, orjson.dumps({"wm": 6, "v": 2}).decode()]}
    reloaded = RecordLog(table, "leads", IndexedCells())
    reloaded.load_partition(0)
    assert dict(reloaded.items(0)) == {"old": {"wm": 6, "v": 2}, "kept": {"wm": 5, "v": 3}}


def test_a_log_without_an_index_reads_entries_written_by_one_with_an_index() -> None:
    table: dict[str, bytes] = {}
    _written(RecordLog(table, "leads", IndexedCells()), 0, {"a": 1}, 3)
    log = RecordLog(table, "leads")
    assert log.load_partition(0) == 3 and log.loaded(0) == {"a": {"wm": 3, "v": 1}}
