"""The worker's collector pacing: survivors are frozen out of full collections; the rare full pass frees cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from salespulse.engine.memory import (
    THRESHOLDS,
    GarbageCollection,
    collect_all_and_freeze,
    collect_young_and_freeze,
    loading_state,
)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_survivors_are_frozen_and_a_full_collection_no_longer_scans_them() -> None:
    state = [{"rep": i} for i in range(10_000)]
    collect_young_and_freeze()
    assert gc.get_freeze_count() >= len(state)
    assert all(len(gc.get_objects(generation)) < len(state) for generation in (0, 1, 2))


def test_a_cycle_frozen_while_alive_is_freed_by_the_full_pass_once_it_is_garbage() -> None:
    ref = cycle()  # unreachable at once, but a live cycle when frozen in a busy worker would look the same
    gc.freeze()
    gc.collect()
    assert ref() is not None  # frozen: the ordinary collections leave it
    collect_all_and_freeze()
    assert ref() is None


def test_young_cycles_are_freed_before_the_freeze() -> None:
    ref = cycle()
    collect_young_and_freeze()
    assert ref() is None


def test_no_collection_runs_during_a_load_and_its_state_is_frozen_after() -> None:
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.set_threshold(100, 1, 1)  # a collection every hundred allocations, were it enabled
    gc.callbacks.append(count)
    try:
        with loading_state():
            state = [{"rep": i} for i in range(10_000)]
            assert not gc.isenabled()
    finally:
        gc.callbacks.remove(count)
    assert collections == []
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(state)


def test_overlapping_loads_freeze_when_the_last_ends_and_leave_a_disabled_collector_disabled() -> None:
    gc.disable()
    frozen = gc.get_freeze_count()
    try:
        with loading_state():
            with loading_state():
                pass
            assert not gc.isenabled() and gc.get_freeze_count() == frozen  # the outer load is still making state
            state = [{"rep": i} for i in range(1_000)]
        assert gc.get_freeze_count() >= len(state)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_the_service_sets_the_thresholds_and_freezes_on_its_period() -> None:
    service = GarbageCollection(freeze_every_s=0.05, full_every_s=3600)
    await service.start()
    try:
        assert gc.get_threshold() == THRESHOLDS
        gc.unfreeze()
        state = [{"rep": i} for i in range(1_000)]
        await service.sleep(0.3)
        assert gc.get_freeze_count() >= len(state)
    finally:
        await service.stop()
    assert gc.get_freeze_count() == 0
