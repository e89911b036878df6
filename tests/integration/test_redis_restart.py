"""A Redis restarted empty (a cache without persistence, which docs/operations.md allows) while a worker runs:
the worker notices and rewrites every key from its state within seconds, with no restart of its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.outputs.redis import SENTINEL_PREFIX
from tests.integration.stack import SalespulseProcess, call, email, post_events, stack_env, wait_for_hash

pytestmark = pytest.mark.integration


async def snapshot(client: aioredis.Redis) -> dict[bytes, object]:
    """Every key salespulse wrote, with its content (sentinels left out: each worker writes its own)."""
    found: dict[bytes, object] = {}
    async for key in client.scan_iter(count=1000):
        if key.startswith(SENTINEL_PREFIX.encode()):
            continue
        kind = await client.type(key)
        if kind == b"hash":
            found[key] = await client.hgetall(key)
        elif kind == b"set":
            found[key] = await client.smembers(key)
        else:
            found[key] = await client.get(key) if kind == b"string" else kind
    return found


async def test_a_redis_restarted_empty_is_rewritten_exactly_within_10_s_without_a_worker_restart(
    fresh_broker: EmbeddedBroker, tmp_path: Path, unique_id: str
) -> None:
    redis_server = EmbeddedRedis(log_path=tmp_path / "redis.log")
    await redis_server.astart()
    client = aioredis.Redis.from_url(redis_server.url)
    env = stack_env(fresh_broker.url, redis_server.url, f"t-{unique_id}")
    reps = [f"rep-r{i}" for i in range(6)]
    events = [call(f"r{i}", reps[i % 6], ("emea", "amer")[i % 2], ("connected", "busy", "voicemail")[i % 3])
              for i in range(600)] + [email(f"m{i}", reps[i % 6], ("emea", "amer")[i % 2]) for i in range(120)]
    try:
        async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
            for start in range(0, len(events), 240):
                assert (await post_events(stack.url, events[start : start + 240]))[0] == 202
            await wait_for_hash(client, "salespulse:activity:team:emea:all", {"total": "360"})
            await wait_for_hash(client, "salespulse:activity:team:amer:all", {"total": "360"})
            await asyncio.sleep(2)  # the long windows (budgeted per flush) too
            before = await snapshot(client)
            assert len(before) > 50

            redis_server.restart()  # no persistence: it comes back empty
            await client.connection_pool.disconnect()
            assert await client.dbsize() == 0
            restarted = time.monotonic()
            after: dict[bytes, object] = {}
            while time.monotonic() - restarted < 10:
                after = await snapshot(client)
                if after == before:
                    break
                await asyncio.sleep(0.2)
            missing = sorted(set(before) - set(after))
            assert after == before, f"{len(missing)} keys missing after 10 s, e.g. {missing[:5]}"
            assert stack.proc is not None and stack.proc.poll() is None
    finally:
        await client.aclose()
        redis_server.stop()
