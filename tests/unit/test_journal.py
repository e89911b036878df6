"""The embedded run's event journal: durable appends, torn tails, shared fsyncs, day segments."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from salespulse.embedded import journal as journal_module
from salespulse.embedded.durable import DataDirInUse, lock_data_dir
from salespulse.embedded.journal import JournalRecord, JournalWriter, read_journal, segments, trim_segments

DAY_MS = 86_400_000
T0 = 1_796_400_000_000  # 2026-12-04 16:00 UTC in ms


def record(n: int, at: int = T0) -> tuple[str, bytes, bytes, int]:
    return ("salespulse.events", f"lead-{n}".encode(), b'{"event_id":"e%d"}' % n, at)


def as_tuples(directory: Path) -> list[tuple[str, bytes, bytes, int]]:
    return [(r.topic, r.key, r.value, r.timestamp_ms) for r in read_journal(directory)]


async def test_records_read_back_in_append_order_with_key_value_and_timestamp(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    await writer.append([record(1), record(2)])
    await writer.append([record(3, T0 + 5)])
    writer.close()
    assert as_tuples(tmp_path) == [record(1), record(2), record(3, T0 + 5)]


async def test_each_utc_day_of_arrival_is_its_own_segment_read_oldest_first(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    await writer.append([record(2, T0 + DAY_MS)])
    await writer.append([record(1, T0)])  # a request stamped just before midnight, written just after
    writer.close()
    assert [p.name for p in segments(tmp_path)] == ["2026-12-04.journal", "2026-12-05.journal"]
    assert [r.key for r in read_journal(tmp_path)] == [b"lead-1", b"lead-2"]


async def test_a_torn_last_record_is_ignored_and_cut_off_before_the_next_append(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    await writer.append([record(1), record(2)])
    writer.close()
    segment = segments(tmp_path)[0]
    whole = segment.read_bytes()
    third = JournalRecord(*record(3)).encode()
    segment.write_bytes(whole + third[: len(third) - 3])  # killed half-way through the third record
    assert as_tuples(tmp_path) == [record(1), record(2)]

    writer = JournalWriter(tmp_path)
    assert segment.read_bytes() == whole
    await writer.append([record(4)])
    writer.close()
    assert as_tuples(tmp_path) == [record(1), record(2), record(4)]


def test_a_record_with_a_wrong_checksum_ends_the_segment_there(tmp_path: Path) -> None:
    frames = [JournalRecord(*record(n)).encode() for n in (1, 2, 3)]
    damaged = bytearray(frames[1])
    damaged[-1] ^= 0xFF
    (tmp_path / "2026-12-04.journal").write_bytes(frames[0] + bytes(damaged) + frames[2])
    assert as_tuples(tmp_path) == [record(1)]


async def test_concurrent_appends_share_fsyncs_and_all_land(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", counting_fsync)
    writer = JournalWriter(tmp_path)
    await writer.append([record(0)])  # creates the segment (and fsyncs the directory)
    calls = 0
    await asyncio.gather(*(writer.append([record(n)]) for n in range(1, 101)))
    writer.close()
    assert sorted(r.key for r in read_journal(tmp_path)) == sorted(f"lead-{n}".encode() for n in range(101))
    assert calls < 50  # a request waiting on a running fsync is written with the next one


async def test_a_failed_write_raises_and_leaves_nothing_that_would_hide_later_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter(tmp_path)
    await writer.append([record(1)])
    size = segments(tmp_path)[0].stat().st_size
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        await writer.append([record(2)])
    assert segments(tmp_path)[0].stat().st_size == size
    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    await writer.append([record(3)])
    writer.close()
    assert as_tuples(tmp_path) == [record(1), record(3)]


def test_trim_deletes_only_days_wholly_older_than_the_horizon(tmp_path: Path) -> None:
    for name in ("2026-10-01.journal", "2026-11-03.journal", "2026-11-04.journal", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    now = T0 / 1000  # 2026-12-04 16:00 UTC: 30 days back is 2026-11-04 16:00
    deleted = trim_segments(tmp_path, keep_days=30, now=now)
    assert [p.name for p in deleted] == ["2026-10-01.journal", "2026-11-03.journal"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-04.journal", "notes.txt"]


def test_a_data_directory_is_held_by_one_run_at_a_time(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match="in use by another salespulse run"):
        lock_data_dir(tmp_path)
    held.close()
    lock_data_dir(tmp_path).close()  # free again once the first run is gone
