"""Helpers for end-to-end tests: salespulse processes (the real CLI) against the real broker and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from salespulse.embedded.ports import free_port


class SalespulseProcess:
    """``python -m salespulse <role>`` as a child process, with its log kept for failure messages."""

    def __init__(self, role: str, log_path: Path, env: dict[str, str], args: Iterable[str] = ()) -> None:
        self.role = role
        self.log_path = log_path
        self.port = free_port()
        self.env = {**os.environ, **env, "SALESPULSE_HTTP_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "salespulse", self.role, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_ready(self, timeout_s: float = 45.0) -> dict[str, Any]:
        """Wait until ``/readyz`` answers 200 (broker, Redis and, for workers, partitions owned)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"{self.role} exited:\n{self.log_tail()}"
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        last = await response.json()
                        if response.status == 200:
                            return last
                except aiohttp.ClientError as exc:
                    last = exc
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.role} not ready after {timeout_s} s (last: {last}):\n{self.log_tail()}")

    async def __aenter__(self) -> "SalespulseProcess":
        """Start and wait until ready; stopped (SIGTERM) on leaving the block."""
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait for a clean exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.role} did not stop on SIGTERM:\n{self.log_tail()}") from None
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def stack_env(kafka_url: str, redis_url: str, app_id: str, **extra: str) -> dict[str, str]:
    """Environment of a salespulse process pointed at the test broker and Redis."""
    return {
        "SALESPULSE_KAFKA_URL": kafka_url,
        "SALESPULSE_REDIS_URL": redis_url,
        "SALESPULSE_APP_ID": app_id,
        "SALESPULSE_TANSU_COMPAT": "true",
        "SALESPULSE_PARTITIONS": "4",
        **extra,
    }


def now_iso(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, timezone.utc).isoformat()


def call(event_id: str, rep: str, team: str, outcome: str = "connected", lead: str | None = None, **kw: Any) -> dict:
    return {
        "event_id": event_id,
        "type": "call.logged",
        "occurred_at": kw.pop("occurred_at", now_iso()),
        "lead_id": lead or f"lead-{event_id}",
        "rep_id": rep,
        "team": team,
        "outcome": outcome,
        **kw,
    }


def email(event_id: str, rep: str, team: str, lead: str | None = None) -> dict:
    return {
        "event_id": event_id,
        "type": "email.sent",
        "occurred_at": now_iso(),
        "lead_id": lead or f"lead-{event_id}",
        "rep_id": rep,
        "team": team,
        "email_id": f"mail-{event_id}",
    }


async def post_events(url: str, events: list[dict] | dict, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    body = orjson.dumps(events)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/webhooks/events", data=body, headers=headers or {}) as response:
            return response.status, await response.json(content_type=None)


async def wait_for_hash(
    client: aioredis.Redis, key: str, expected: dict[str, str], timeout_s: float = 20.0
) -> dict[str, str]:
    """Wait until the Redis hash ``key`` has (at least) the expected field values."""
    deadline = time.monotonic() + timeout_s
    current: dict[str, str] = {}
    while time.monotonic() < deadline:
        raw = await client.hgetall(key)
        current = {k.decode(): v.decode() for k, v in raw.items()}
        if all(current.get(field) == value for field, value in expected.items()):
            return current
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key} = {current}, expected {expected}")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels`` (exposition text)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 200
            return await response.text()


async def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5, timeout_s: float = 20.0) -> list[tuple[bytes, bytes]]:
    """Every record of a topic from the beginning, until no new record came for ``idle_s``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()  # noqa: SLF001 - topic just created
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[tuple[bytes, bytes]] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [(m.key, m.value) for msgs in batch.values() for m in msgs]
            if got:
                records += got
                idle_since = time.monotonic()
        return records
    finally:
        await consumer.stop()


async def wait_for_topic_records(
    bootstrap: str, topic: str, done: Callable[[dict[bytes, dict]], bool], timeout_s: float = 15.0
) -> dict[bytes, dict]:
    """The newest JSON record per key of a metric topic, polled until ``done`` holds (fails after ``timeout_s``).

    Metric topics take the newest values every 2 s (docs/outputs.md), so a test must wait for them.
    """
    latest: dict[bytes, dict] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for key, value in await read_topic(bootstrap, topic, idle_s=0.5):
            latest[key] = orjson.loads(value)
        if done(latest):
            return latest
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} never held the expected records; newest per key: {latest!r}"[:4000])
        await asyncio.sleep(0.5)
