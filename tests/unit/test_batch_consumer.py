"""The batch consumer acks a batch agent's offsets only once its state is persisted, holes included."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from salespulse.engine.faust.batch_consumer import BatchAgent
from salespulse.engine.faust.app import SalespulseApp

TOPIC = "salespulse.events"


async def consumer_with_agent(tmp_path: Path, calls: list[Any]) -> Any:
    app = SalespulseApp("t-batch", broker="kafka://127.0.0.1:1", store="memory://", datadir=str(tmp_path))

    async def handle(records: Sequence[Any]) -> None:
        calls.append(("handle", [r.offset for r in records]))

    async def persist() -> None:
        calls.append(("persist",))

    app.batch_agent(app.topic(TOPIC, key_serializer="raw", value_serializer="raw"), BatchAgent(handle, persist))
    await app.topics._update_indices()  # what the conductor does when the worker subscribes
    return app.consumer


def records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=offset) for offset in offsets]


async def test_handled_offsets_are_committable_only_after_persist(tmp_path: Path) -> None:
    calls: list[Any] = []
    consumer = await consumer_with_agent(tmp_path, calls)
    tp = TP(TOPIC, 0)
    agent = consumer.app.batch_agents[TOPIC]
    await consumer._handle_locked(agent, [(tp, records(5, 6))], consumer.app.consumer_generation_id)
    await consumer._handle_locked(agent, [(tp, records(7, 9))], consumer.app.consumer_generation_id)  # 8: a hole
    assert calls == [("handle", [5, 6]), ("handle", [7, 9])]
    assert consumer._new_offset(tp) is None  # nothing acked: a commit now would commit nothing
    assert consumer._unacked_messages  # a rebalance or stop waits for the unpersisted state

    await consumer.persist_batches()
    assert calls[-1] == ("persist",)
    assert consumer._new_offset(tp) == 10  # the hole at 8 does not hold the commit back
    assert not consumer._unacked_messages

    await consumer.persist_batches()
    assert calls.count(("persist",)) == 1  # nothing new handled: nothing to write


async def test_records_fetched_before_a_rebalance_are_not_handled(tmp_path: Path) -> None:
    calls: list[Any] = []
    consumer = await consumer_with_agent(tmp_path, calls)
    agent = consumer.app.batch_agents[TOPIC]
    fetched_in = consumer.app.consumer_generation_id
    consumer.app.consumer_generation_id = fetched_in + 1
    await consumer._handle_locked(agent, [(TP(TOPIC, 0), records(1, 2))], fetched_in)
    assert calls == []
    assert not consumer._unacked_messages
