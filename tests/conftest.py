"""Session-wide fixtures: one real Tansu broker and one real redis-server per test session.

The processes are always started (never skipped); they are tied to the pytest process
and cannot outlive it. Their logs go to pytest's base temp dir (``embedded*/``).
"""

from __future__ import annotations

import gc
import uuid
from pathlib import Path
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis


@pytest.fixture(autouse=True)
def unfrozen_after() -> Iterator[None]:
    """A partition's load freezes the state it made (``engine.memory.loading_state``), as a worker should; in
    this one long process, each test's frozen objects are handed back to the collector when it ends."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A started Tansu broker (memory storage) on a free port; stopped at session end.

    Share it: give each test its own app id / topic names (see ``unique_id``).
    """
    log_dir = tmp_path_factory.mktemp("embedded-broker")
    b = EmbeddedBroker(log_path=log_dir / "tansu.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it starts in milliseconds, and no topic leaks between tests."""
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A started in-memory redis-server on a free port; stopped at session end."""
    log_dir = tmp_path_factory.mktemp("embedded-redis")
    r = EmbeddedRedis(log_path=log_dir / "redis.log")
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest_asyncio.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on the session server; the server is FLUSHALLed before each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def unique_id() -> str:
    """A short unique string for per-test app ids and topic prefixes."""
    return uuid.uuid4().hex[:10]
