"""The worker's batch agent commits what it consumed: offsets reach the consumer group once counted.

The SIGKILL tests show that nothing is lost or counted twice; they would pass as well if the worker
never committed (a restart would replay everything, deduplicated). This pins that it does commit,
and only past what its tables hold.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.topics import EVENTS_TOPIC
from tests.integration.stack import SalespulseProcess, call, post_events, stack_env, wait_for_hash

pytestmark = pytest.mark.integration


async def next_offsets(bootstrap: str, expected: int) -> dict[int, int]:
    """Per partition of ``salespulse.events``, the offset after its last record (read back: Tansu's end offsets are off)."""
    consumer = AIOKafkaConsumer(EVENTS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        after: dict[int, int] = {}
        seen = 0
        deadline = time.monotonic() + 20
        while seen < expected and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                seen += len(records)
                after[tp.partition] = records[-1].offset + 1
        assert seen == expected
        return after
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, partitions: list[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1 if none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(EVENTS_TOPIC, p)) for p in partitions}
        return {p: -1 if offset is None else offset for p, offset in committed.items()}
    finally:
        await consumer.stop()


async def test_the_worker_commits_the_offsets_of_what_it_counted(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path, unique_id: str
) -> None:
    app_id = f"t-{unique_id}"
    env = stack_env(fresh_broker.url, redis_server.url, app_id, SALESPULSE_COMMIT_INTERVAL_S="0.5")
    async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
        events = [call(f"c{i}", f"rep-{i % 5}", "emea", lead=f"lead-{i}") for i in range(40)]
        assert (await post_events(stack.url, events))[0] == 202
        for rep in range(5):
            await wait_for_hash(redis_client, f"salespulse:activity:rep:rep-{rep}:all", {"total": "8"})
        ends = await next_offsets(fresh_broker.bootstrap, 40)
        deadline = time.monotonic() + 20
        while True:
            committed = await committed_offsets(fresh_broker.bootstrap, app_id, sorted(ends))
            if committed == ends or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert committed == ends, stack.log_tail()
