"""Kafka output: ``salespulse.metrics.<family>``, one compactable record per partial, batched.

Records are appended to per-partition batches directly (``create_batch``/``send_batch``), placed by the
producer's default key partitioner as ``send`` would: a flush of thousands of partials costs a few
batches, not a future and a log call per record (which stalled the event loop for hundreds of ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from salespulse.kafka_connection import KafkaConnection
from salespulse.outputs.aggregates import Partial
from salespulse.topics import broker_reachable, metrics_topic

_PARTITIONER = DefaultPartitioner()
_MAX_BATCH_BYTES = 512 * 1024  # a flush is a few batches per partition (Kafka accepts 1 MiB by default)


class TopicPublisher:
    """Sends partials as JSON records keyed ``<scope>:<id>:<window>:p<partition>`` (latest value per key)."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **self.kafka.client_options(), linger_ms=20, acks="all", max_batch_size=_MAX_BATCH_BYTES
        )
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
        producer = self.producer
        by_topic: dict[str, list[Partial]] = {}
        for partial in partials:
            by_topic.setdefault(metrics_topic(partial.family), []).append(partial)
        futures = []
        for topic, group in by_topic.items():
            all_partitions = sorted(await producer.partitions_for(topic))
            batches: dict[int, Any] = {}
            for partial in group:
                key = partial.topic_key.encode()
                value = orjson.dumps(partial.record)
                partition = _PARTITIONER(key, all_partitions, all_partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for partition, batch in batches.items():
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        return len(partials)

    async def ping(self) -> bool:
        """True if the broker answers (readiness of the worker role)."""
        return await broker_reachable(self._producer)
