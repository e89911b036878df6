"""Keeps the board's snapshot current: rebuilt when Redis announces a change, pushed to every viewer.

The workers announce each write on ``salespulse:updates`` and each SLA alert on ``salespulse:alerts``;
the hub listens to both and rebuilds the snapshot at most every ``min_interval_s`` (a burst of
updates costs one read), and every ``refresh_s`` anyway (the day turns over, a key expires). A viewer
gets the newest snapshot only: a slow one skips intermediate states rather than queueing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from mode import Service

from salespulse.board.snapshot import BoardReader
from salespulse.outputs.alerts import ALERTS_CHANNEL
from salespulse.outputs.redis import UPDATES_CHANNEL

log = logging.getLogger(__name__)


def _announced_keys(message: dict[str, Any]) -> list[str]:
    """The keys an updates message names (none for an alert or a message of another shape)."""
    try:
        body = orjson.loads(message["data"])
        return [str(update["key"]) for update in body.get("updates", ())]
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return []


class BoardHub(Service):
    """The current snapshot (JSON bytes) and the queues of connected viewers."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        reader: BoardReader,
        min_interval_s: float = 0.3,
        refresh_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.redis = redis_client
        self.reader = reader
        self.min_interval_s = min_interval_s
        self.refresh_s = refresh_s
        self.snapshot: bytes | None = None
        self._content: bytes | None = None
        self._changed = asyncio.Event()
        self._viewers: set[asyncio.Queue[bytes]] = set()

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._viewers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self._viewers.discard(queue)

    async def current(self) -> bytes:
        """The newest snapshot, read now if none was built yet."""
        if self.snapshot is None:
            await self.rebuild()
        assert self.snapshot is not None
        return self.snapshot

    async def rebuild(self) -> bool:
        """Read a snapshot; push it to the viewers if anything but its timestamp changed."""
        data = await self.reader.read()
        content = orjson.dumps({k: v for k, v in data.items() if k != "generated_at"})
        self.snapshot = orjson.dumps(data)
        if content == self._content:
            return False
        self._content = content
        for queue in list(self._viewers):
            if queue.full():
                queue.get_nowait()  # drop the older snapshot the viewer has not taken yet
            queue.put_nowait(self.snapshot)
        return True

    @Service.task
    async def _listen(self) -> None:
        while not self.should_stop:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(UPDATES_CHANNEL, ALERTS_CHANNEL)
                self._changed.set()  # anything may have changed while not listening
                while not self.should_stop:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self.reader.saw(_announced_keys(message))
                        self._changed.set()
            except Exception as exc:  # Redis restarting: listen again shortly
                log.warning("board: listening to Redis failed (%r); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()

    @Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.refresh_s)
            except asyncio.TimeoutError:
                pass
            self._changed.clear()
            started = time.monotonic()
            try:
                await self.rebuild()
            except Exception as exc:
                log.warning("board: reading Redis failed (%r)", exc)
            await asyncio.sleep(max(0.0, self.min_interval_s - (time.monotonic() - started)))
