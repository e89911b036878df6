"""A batch whose follow-ups cannot be delivered leaves the worker unwritable: nothing of it, or of earlier
batches merged with it, is written under an earlier watermark (which would count it twice on replay)."""

from __future__ import annotations

from typing import Any

import pytest

from salespulse.engine.worker import UnwritableState, WorkerRuntime


class Processor:
    def __init__(self) -> None:
        self.persisted: list[Any] = []

    def stage(self, records: list[Any]) -> Any:
        from salespulse.engine.processor import BatchStats, StagedBatch

        return StagedBatch(BatchStats(follow_ups=["a follow-up"]), {0: records[-1][1]}, 0.0)  # type: ignore[list-item]

    def persist(self, staged: Any) -> None:
        self.persisted.append(staged)


def runtime(deliver_fails: bool) -> tuple[WorkerRuntime, Processor]:
    worker = object.__new__(WorkerRuntime)  # only the batch path: no Faust app needed
    processor = Processor()

    async def deliver(follow_ups: list[Any]) -> None:
        if deliver_fails:
            raise TimeoutError("broker did not ack")

    worker.processor = processor  # type: ignore[assignment]
    worker._deliver_follow_ups = deliver  # type: ignore[method-assign]
    worker._unpersisted = None
    worker._poisoned = False
    worker.positions = {}
    return worker, processor


async def test_a_failed_follow_up_delivery_makes_persist_refuse_to_write_anything() -> None:
    worker, processor = runtime(deliver_fails=True)
    with pytest.raises(TimeoutError):
        await worker._count([(0, 7, b"{}", 0.0)])
    with pytest.raises(UnwritableState):
        await worker._persist()
    assert processor.persisted == []


async def test_delivered_follow_ups_let_the_batch_be_written_at_the_next_persist() -> None:
    worker, processor = runtime(deliver_fails=False)
    worker.health = type("H", (), {})()  # type: ignore[assignment]
    worker.flusher = type("F", (), {"notify": lambda self: None})()  # type: ignore[assignment]

    class Metric:
        def observe(self, _: float) -> None: ...
        def labels(self, _: str) -> "Metric":
            return self
        def inc(self, _: float) -> None: ...

    worker.health.batch_events = worker.health.events = Metric()  # type: ignore[attr-defined]
    await worker._count([(0, 7, b"{}", 0.0)])
    await worker._persist()
    assert [s.last_offsets for s in processor.persisted] == [{0: 7}]
    assert worker.positions == {0: 8}
