"""The durable run's catch-up: which batches are processed as of when they arrived."""

from __future__ import annotations

from salespulse.embedded.durable import CatchUp, SeedResult


def catch_up(ends: dict[int, int]) -> CatchUp:
    return CatchUp(SeedResult(ends=ends), positions=dict, held=[])


def test_a_batch_of_re_seeded_records_is_processed_as_of_its_latest_arrival() -> None:
    clock = catch_up({0: 10, 1: 5})
    assert clock.batch_time([(0, 3, b"", 1000.0), (1, 4, b"", 1500.0), (0, 4, b"", 1200.0)]) == 1500.0


def test_a_batch_with_anything_written_since_the_start_uses_the_wall_clock() -> None:
    clock = catch_up({0: 10})
    assert clock.batch_time([(0, 9, b"", 1000.0), (0, 10, b"", 2000.0)]) is None  # offset 10: new
    assert clock.batch_time([(1, 0, b"", 1000.0)]) is None  # nothing was re-seeded in partition 1
    assert clock.batch_time([(0, 1, b"")]) is None  # no timestamp
    assert clock.batch_time([(0, 1, b"", float("inf"))]) is None  # a replayed record


def test_once_caught_up_every_batch_uses_the_wall_clock() -> None:
    clock = catch_up({0: 10})
    clock.caught_up = True
    assert clock.batch_time([(0, 1, b"", 1000.0)]) is None


def test_behind_counts_the_re_seeded_records_not_processed_yet() -> None:
    positions = {0: 7}
    clock = CatchUp(SeedResult(ends={0: 10, 1: 5}), positions=lambda: positions, held=[])
    assert clock.behind() == 3 + 5
    positions.update({0: 10, 1: 5})
    assert clock.behind() == 0
