"""A durable embedded run: re-seed the memory-only broker at start, hold the outputs until caught up.

At start (:func:`reseed`): every journal record goes back into its topic with its key and original
timestamp, so it lands in the same partition and keeps its arrival time; the SLA alerts already sent
(the persisted Redis keeps each one in its ``HSETNX`` guard) go back into ``salespulse.alerts``. The
worker, fresh, then reprocesses ``salespulse.events`` from offset 0: dedup and the cells' offset
watermarks make that exact.

Until the worker has processed every re-seeded record (:class:`CatchUp`), the flusher and the SLA
alert clock do not run: Redis keeps the numbers of before the stop instead of climbing back, and no
lead fires an alert from a half-rebuilt state. Then the clock first reads ``salespulse.alerts``
back (the same path a worker takes over a crashed one's partitions), so an alert sent before the stop
is not sent again, and a lead still waiting alerts once, at its deadline.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from mode import Service

from salespulse.embedded.journal import read_journal
from salespulse.topics import ALERTS_TOPIC, EVENTS_TOPIC

__all__ = ["CatchUp", "DataDirInUse", "SeedResult", "lock_data_dir", "reseed"]

log = logging.getLogger(__name__)

_ALERT_GUARDS = "salespulse:alert:*"
_STATUS_ORDER = {"firing": 0, "resolved": 1}


class DataDirInUse(RuntimeError):
    """Another process holds the data directory (two runs appending to one journal would corrupt it)."""


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``data_dir`` until the returned file is closed (or the process ends)."""
    handle = (data_dir / "run.lock").open("a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirInUse(f"{data_dir} is in use by another salespulse run (SALESPULSE_DATA_DIR)") from None
    return handle


@dataclass
class SeedResult:
    """What a start put back into the broker."""

    #: Per partition of ``salespulse.events``: the offset after the last re-seeded record.
    ends: dict[int, int] = field(default_factory=dict)
    records: int = 0
    alerts: int = 0
    seconds: float = 0.0


async def reseed(bootstrap: str, journal_dir: Path, redis_url: str | None, partitions: int) -> SeedResult:
    """Write the journal's records, then the alerts in Redis's guards, back into a fresh broker."""
    started = time.perf_counter()
    result = SeedResult()
    if redis_url is not None:
        await reset_watermarks(redis_url, partitions)
    # Batched writes: the Tansu end-offset quirk (FAUST_NOTES.md) concerns ListOffsets, not the
    # offsets a produce acknowledges, which are what the catch-up waits for.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in read_journal(journal_dir):
            pending.append(
                await producer.send(record.topic, key=record.key, value=record.value, timestamp_ms=record.timestamp_ms)
            )
            if len(pending) >= 5000:
                _collect(await asyncio.gather(*pending), result)
                pending.clear()
        _collect(await asyncio.gather(*pending), result)
        pending.clear()
        if redis_url is not None:
            alerts = await sent_alerts(redis_url)
            for lead_id, alert in alerts:
                pending.append(await producer.send(ALERTS_TOPIC, key=lead_id.encode(), value=alert))
            await asyncio.gather(*pending)
            result.alerts = len(alerts)
    finally:
        await producer.stop()
    result.seconds = time.perf_counter() - started
    return result


def _collect(acks: Iterable[Any], result: SeedResult) -> None:
    for ack in acks:
        result.records += 1
        if ack.topic == EVENTS_TOPIC:
            result.ends[ack.partition] = max(result.ends.get(ack.partition, 0), ack.offset + 1)


_RESET_WATERMARKS = """
local partitions = tonumber(ARGV[1])
local changed = 0
for _, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local partition = tonumber(fields[i])
    if partition ~= nil then
      if partition >= partitions then
        redis.call('HDEL', key, fields[i])
      else
        local value = fields[i + 1]
        local space = string.find(value, ' ', 1, true)
        redis.call('HSET', key, fields[i], '-1' .. string.sub(value, space))
      end
      changed = changed + 1
    end
  end
end
return changed
"""


async def reset_watermarks(redis_url: str, partitions: int) -> int:
    """Let the rebuilt state overwrite Redis: every stored partial's watermark becomes -1.

    Reprocessed records get new offsets (the worker's own follow-ups are not journaled, so they no
    longer sit between them), which Redis would take for a stale writer's. Totals stay as they are
    until the first flush after the catch-up rewrites them; partials of partitions beyond
    ``partitions`` (the count was lowered) are dropped. Returns how many partials were reset.
    """
    client = aioredis.Redis.from_url(redis_url)
    script = client.register_script(_RESET_WATERMARKS)
    changed = 0
    try:
        keys: list[bytes] = []
        async for key in client.scan_iter(match="salespulse:*#partials", count=1000):
            keys.append(key)
            if len(keys) >= 500:
                changed += await script(keys=keys, args=[partitions])
                keys = []
        if keys:
            changed += await script(keys=keys, args=[partitions])
    finally:
        await client.aclose()
    return changed


async def sent_alerts(redis_url: str) -> list[tuple[str, bytes]]:
    """(lead id, alert JSON) of every alert status the Redis guards hold, oldest first."""
    client = aioredis.Redis.from_url(redis_url)
    found: list[tuple[str, str, int, bytes]] = []
    try:
        async for key in client.scan_iter(match=_ALERT_GUARDS, count=1000):
            lead_id = key.decode().removeprefix("salespulse:alert:")
            for status, alert in (await client.hgetall(key)).items():
                emitted = orjson.loads(alert).get("emitted_at", "")
                found.append((emitted, lead_id, _STATUS_ORDER.get(status.decode(), 2), alert))
    finally:
        await client.aclose()
    found.sort(key=lambda item: (item[0], item[2]))
    return [(lead_id, alert) for _, lead_id, _, alert in found]


class CatchUp(Service):
    """Starts ``held`` services (the flusher, the alert clock) once the worker reprocessed the re-seed.

    ``positions()`` is the worker's next offset per partition of ``salespulse.events``;
    ``before_release`` runs just before the held services start.
    """

    def __init__(
        self,
        seeded: SeedResult,
        positions: Callable[[], dict[int, int]],
        held: list[Service],
        before_release: Callable[[], None] = lambda: None,
        poll_s: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seeded = seeded
        self.positions = positions
        self.held = held
        self.before_release = before_release
        self.poll_s = poll_s
        self.caught_up = False

    def behind(self) -> int:
        """Re-seeded records of ``salespulse.events`` not processed yet."""
        positions = self.positions()
        return sum(max(0, end - positions.get(partition, 0)) for partition, end in self.seeded.ends.items())

    @Service.task
    async def _release_when_caught_up(self) -> None:
        started = time.monotonic()
        while self.behind() and not self.should_stop:
            await asyncio.sleep(self.poll_s)
        if self.should_stop:
            return
        log.info(
            "journal: %d records reprocessed %.1f s after the worker started; publishing resumes",
            self.seeded.records, time.monotonic() - started,
        )
        self.before_release()
        for service in self.held:
            await self.add_runtime_dependency(service)
        self.caught_up = True

    async def ready(self) -> bool:
        """Readiness: false until the state is rebuilt and the outputs run."""
        return self.caught_up
