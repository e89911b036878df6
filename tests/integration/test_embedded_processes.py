"""Real Tansu broker and redis-server processes: readiness, round trips, lifetime guarantees."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from salespulse.embedded.broker import EmbeddedBroker, kafka_metadata_probe
from salespulse.embedded.ports import free_port, pid_alive, wait_for_port
from salespulse.embedded.redis_server import EmbeddedRedis, redis_ping

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


async def _round_trip(bootstrap: str, topic: str, n: int = 40, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384)
    await producer.start()
    try:
        assert len(await producer.partitions_for(topic)) == partitions
        for i in range(n):
            await producer.send_and_wait(
                topic, value=f"v{i}".encode(), key=f"k{i}".encode(), partition=i % partitions
            )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        got: dict[bytes, tuple[bytes, int]] = {}
        deadline = time.monotonic() + 8.0
        while len(got) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for rec in records:
                    assert rec.key is not None and rec.value is not None
                    got[rec.key] = (rec.value, tp.partition)
    finally:
        await consumer.stop()
    assert got == {f"k{i}".encode(): (f"v{i}".encode(), i % partitions) for i in range(n)}


# --------------------------------------------------------------------------- ports


def test_free_port_and_wait_for_port_timeout() -> None:
    port = free_port()
    assert 0 < port < 65536
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout_s=0.3)
    assert time.monotonic() - t0 < 2.0
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        wait_for_port("127.0.0.1", port, timeout_s=1.0)


# --------------------------------------------------------------------------- broker


async def test_broker_round_trip_4_partitions(broker: EmbeddedBroker, unique_id: str) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    await _round_trip(broker.bootstrap, f"roundtrip-{unique_id}")


async def test_broker_restart_same_port(tmp_path: Path, unique_id: str) -> None:
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    await b.astart()  # from inside the running loop
    try:
        port, pid1 = b.port, b.pid
        await _round_trip(b.bootstrap, f"before-{unique_id}", n=8)
        b.restart()
        assert b.running and b.port == port and b.pid != pid1
        assert pid1 is not None and not pid_alive(pid1)
        assert any(p == port for _, _, p in kafka_metadata_probe("127.0.0.1", port))
        await _round_trip(b.bootstrap, f"after-{unique_id}", n=8)
    finally:
        await b.astop()
    assert not b.running


def test_broker_stop_leaves_no_process(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as b:
        pid = b.pid
        assert pid is not None and pid_alive(pid)
    assert not pid_alive(pid)
    assert not b.running and b.pid is None
    b.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=0.5)


def test_broker_dies_on_busy_port_raises_with_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        b = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
        with pytest.raises(RuntimeError, match="Address in use"):
            b.start(timeout_s=3.0)
        assert not b.running


# --------------------------------------------------------------------------- redis


async def test_redis_set_get(redis_server: EmbeddedRedis, redis_client: aioredis.Redis) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    await redis_client.set("salespulse:probe", "42")
    assert await redis_client.get("salespulse:probe") == b"42"
    assert await redis_client.config_get("save") == {"save": ""}
    assert await redis_client.config_get("appendonly") == {"appendonly": "no"}


async def test_redis_client_is_flushed(redis_client: aioredis.Redis) -> None:
    assert await redis_client.dbsize() == 0


def test_redis_stop_restart_and_no_process(tmp_path: Path) -> None:
    r = EmbeddedRedis(log_path=tmp_path / "redis.log")
    with r:
        pid, port = r.pid, r.port
        assert pid is not None and redis_ping("127.0.0.1", port)
        r.restart()
        assert r.port == port and r.pid != pid and redis_ping("127.0.0.1", port)
        assert not pid_alive(pid)
        pid = r.pid
    assert pid is not None and not pid_alive(pid)
    r.stop()  # idempotent
    assert not r.running


async def test_redis_data_dir_survives_restart(tmp_path: Path) -> None:
    r = EmbeddedRedis(data_dir=tmp_path / "data", log_path=tmp_path / "redis.log")
    async with r:
        # Fresh clients: redis-py 8.1's from_url() pool has retry=None, so a pooled
        # connection fails once with ConnectionError after a server restart.
        client = aioredis.Redis.from_url(r.url)
        await client.set("k", "v")
        await client.aclose()
        r.restart()
        client = aioredis.Redis.from_url(r.url)
        try:
            assert await client.get("k") == b"v"
        finally:
            await client.aclose()
    assert any((tmp_path / "data").iterdir())


def test_redis_dies_on_busy_port_raises_with_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = EmbeddedRedis(port=port, log_path=tmp_path / "redis.log")
        with pytest.raises(RuntimeError, match="exited during startup"):
            r.start(timeout_s=5.0)
        assert "Address already in use" in (tmp_path / "redis.log").read_text()
        assert not r.running


# --------------------------------------------------------------------------- lifetime guarantees

_CHILD = textwrap.dedent(
    """
    import sys, time
    from salespulse.embedded.broker import EmbeddedBroker
    from salespulse.embedded.redis_server import EmbeddedRedis
    server = EmbeddedBroker() if sys.argv[1] == "broker" else EmbeddedRedis()
    server.start()
    print(server.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("kind", ["broker", "redis"])
def test_server_dies_with_sigkilled_parent(kind: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, kind],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        server_pid = int(line.strip())
        assert pid_alive(server_pid)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
        assert _wait_gone(server_pid, 5.0), f"{kind} pid {server_pid} outlived its SIGKILLed parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_server_started_from_short_lived_thread_survives_thread_exit(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG is per *thread*: the server must not die when the starting thread ends."""
    r = EmbeddedRedis(log_path=tmp_path / "redis.log")
    t = threading.Thread(target=r.start)
    t.start()
    t.join()
    try:
        assert r.running
        time.sleep(0.3)
        assert r.running and redis_ping("127.0.0.1", r.port)
    finally:
        r.stop()


async def test_astart_inside_running_loop(tmp_path: Path) -> None:
    async with EmbeddedRedis(log_path=tmp_path / "redis.log") as r:
        assert redis_ping("127.0.0.1", r.port)
        assert asyncio.get_running_loop().is_running()
    assert not r.running
    assert os.path.exists(tmp_path / "redis.log")
