"""Kafka output: ``salespulse.metrics.<family>``, one compactable record per partial, batched."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from salespulse.publishers.partials import Partial
from salespulse.streams.topics import broker_reachable, metrics_topic


class TopicPublisher:
    """Sends partials as JSON records keyed ``<scope>:<id>:<window>:p<partition>`` (latest value per key)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("TopicPublisher.start() was not awaited")
        return self._producer

    async def publish(self, partials: Sequence[Partial]) -> int:
        """Send every partial and wait until the broker has them all; returns how many."""
        futures = [
            await self.producer.send(
                metrics_topic(partial.family), key=partial.topic_key.encode(), value=orjson.dumps(partial.record)
            )
            for partial in partials
        ]
        await asyncio.gather(*futures)
        return len(futures)

    async def ping(self) -> bool:
        """True if the broker answers (readiness of the worker role)."""
        return await broker_reachable(self._producer)
