"""The durable run's catch-up: how far the worker is behind the re-seeded journal."""

from __future__ import annotations

from salespulse.embedded.durable import CatchUp, SeedResult


def test_behind_counts_the_re_seeded_records_not_processed_yet() -> None:
    positions = {0: 7}
    clock = CatchUp(SeedResult(ends={0: 10, 1: 5}), positions=lambda: positions, held=[])
    assert clock.behind() == 3 + 5
    positions.update({0: 10, 1: 5})
    assert clock.behind() == 0
