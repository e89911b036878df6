"""Per-lead alerts out (every rule, ``alert`` naming it): ``salespulse.alerts`` (keyed by lead, in the lead's own partition) and Redis pub/sub.

Each status of a lead's alert goes out once: the lead state records it as published only after both
sinks took it (``engine.alert_clock``); Redis guards its pub/sub message with ``HSETNX``; and before
republishing what a crashed worker left unrecorded, the topic partition is read back for alerts already there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from salespulse.topics import ALERTS_TOPIC

log = logging.getLogger(__name__)

ALERTS_CHANNEL = "salespulse:alerts"
_PUBLISH_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
  return 1
end
return 0
"""
_GUARD_TTL_S = 35 * 86400


def published_key(alert: dict[str, Any]) -> str:
    """What records one alert status as sent: ``firing`` / ``resolved`` for the SLA (as before other rules
    existed), ``<rule>:<status>`` for the others; the field of the Redis guard hash too."""
    rule, status = alert["alert"], alert["status"]
    return str(status) if rule == "lead_response_sla" else f"{rule}:{status}"


class AlertSinks:
    """The Kafka topic and the Redis channel, each idempotent per (lead, status)."""

    def __init__(self, redis_client: aioredis.Redis, bootstrap: str) -> None:
        self.redis = redis_client
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._publish_once = redis_client.register_script(_PUBLISH_ONCE)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, alerts: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        """Publish alerts to both sinks; raises if either did not take them all."""
        assert self._producer is not None, "AlertSinks.start() was not awaited"
        futures = []
        for partition, lead_id, alert in alerts:
            futures.append(
                await self._producer.send(ALERTS_TOPIC, key=lead_id.encode(), value=orjson.dumps(alert), partition=partition)
            )
        await asyncio.gather(*futures)
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, lead_id, alert in alerts:
                await self._publish_once(
                    keys=[f"salespulse:alert:{lead_id}"],
                    args=[published_key(alert), orjson.dumps(alert).decode(), ALERTS_CHANNEL, _GUARD_TTL_S],
                    client=pipe,
                )
            await pipe.execute()

    async def already_sent(self, partition: int) -> set[tuple[str, str]]:
        """(lead id, published key) of every alert already in the topic partition."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            tp = TopicPartition(ALERTS_TOPIC, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            sent: set[tuple[str, str]] = set()
            # Read until the partition stays quiet, not up to its end offset: Tansu reports end
            # offsets of multi-record batches wrong. Alerts are written before they are recorded,
            # so everything this must find is already in the log.
            idle = 0
            while idle < 2:
                batch = await consumer.getmany(tp, timeout_ms=300)
                messages = batch.get(tp, [])
                idle = 0 if messages else idle + 1
                for message in messages:
                    alert = orjson.loads(message.value)
                    sent.add((alert["lead_id"], published_key(alert)))
            return sent
        finally:
            await consumer.stop()
