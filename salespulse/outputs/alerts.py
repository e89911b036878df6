"""Per-lead alerts out (every rule, ``alert`` naming it): ``salespulse.alerts`` (keyed by lead, in the lead's own partition) and Redis pub/sub.

Each status of a lead's alert goes out once: the lead state records it as published only after both
sinks took it (``engine.alert_clock``); Redis guards its pub/sub message with ``HSETNX``; and before
republishing what a crashed worker left unrecorded, the topic partition is read back for alerts already there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from salespulse.kafka_connection import KafkaConnection
from salespulse.outputs.alertmanager import RULES
from salespulse.topics import ALERTS_TOPIC

log = logging.getLogger(__name__)

ALERTS_CHANNEL = "salespulse:alerts"
#: The newest alerts (the live board's feed): a sorted set of alert JSON scored by emission time (ms).
RECENT_ALERTS_KEY = "salespulse:alerts:recent"
RECENT_ALERTS_KEPT = 200
#: Per day (in the workers' time zone, of ``emitted_at``): a hash ``<rule>:<status>:<team>`` -> count,
#: incremented only with the guard's first write of a status, so a redelivery or a takeover never counts twice.
ALERT_COUNTS_PREFIX = "salespulse:alerts:counts:"
_COUNTS_TTL_S = 8 * 86400
_PUBLISH_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[6]))
  redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
  redis.call('EXPIRE', KEYS[3], ARGV[8])
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


#: Rules whose alert names one lead for its whole life: their clock id is the lead id (as before other rules).
LEAD_RULES = frozenset({"lead_response_sla", "lead_response_warning"})


def clock_id(alert: dict[str, Any]) -> str:
    """What names an alert's clock in the guard hash and the topic's key: the lead id for the lead rules,
    ``<entity>@<started_at>`` for rules whose entity can alert again later (a deal stalled in its next stage)."""
    if alert["alert"] in LEAD_RULES:
        return str(alert["lead_id"])
    entity = RULES[alert["alert"]][2]
    return f"{alert[entity]}@{alert['started_at']}"


def count_field(alert: dict[str, Any]) -> str:
    """The field of the day's counts hash: ``<rule>:<status>:<team>`` (a team may contain ``:``; rules and
    statuses do not)."""
    return f"{alert['alert']}:{alert['status']}:{alert.get('team') or 'unassigned'}"


class AlertSinks:
    """The Kafka topic and the Redis channel, each idempotent per (clock id, status): a ``Sink`` (``add`` then
    ``flush``) whose checkpoint is the alert clock's tick. A status is recorded as published only after a
    flush that took it (``engine.alert_clock``)."""

    name = "alerts"

    def __init__(self, redis_client: aioredis.Redis, kafka: KafkaConnection, tz: tzinfo = timezone.utc) -> None:
        self.redis = redis_client
        self.tz = tz
        self.backlog: dict[tuple[str, str], tuple[int, str, dict[str, Any]]] = {}
        self.kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._publish_once = redis_client.register_script(_PUBLISH_ONCE)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self.kafka.client_options(), acks="all", linger_ms=5)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def add(self, items: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        """Buffer alerts (partition, clock id, alert JSON) for the next flush; one per clock id and status."""
        for item in items:
            self.backlog[(item[1], published_key(item[2]))] = item

    async def flush(self, force: bool = False) -> int:
        """Publish the buffered alerts to both sinks; on failure keep them for the next flush and raise."""
        if not self.backlog:
            return 0
        pending, self.backlog = self.backlog, {}
        try:
            await self.send(list(pending.values()))
        except BaseException:
            for key, item in pending.items():
                self.backlog.setdefault(key, item)
            raise
        return len(pending)

    async def send(self, alerts: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        """Publish alerts to both sinks now; raises if either did not take them all."""
        assert self._producer is not None, "AlertSinks.start() was not awaited"
        futures = []
        for partition, lead_id, alert in alerts:
            futures.append(
                await self._producer.send(ALERTS_TOPIC, key=lead_id.encode(), value=orjson.dumps(alert), partition=partition)
            )
        await asyncio.gather(*futures)
        await self.publish_redis(alerts)

    async def publish_redis(
        self, alerts: Sequence[tuple[int, str, dict[str, Any]]], keep: int = RECENT_ALERTS_KEPT
    ) -> None:
        """The Redis half: the channel message, the guard and the recent-alerts set, once per (lead, status)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, lead_id, alert in alerts:
                emitted = datetime.fromisoformat(alert["emitted_at"])
                counts = f"{ALERT_COUNTS_PREFIX}{emitted.astimezone(self.tz).date().isoformat()}"
                await self._publish_once(
                    keys=[f"salespulse:alert:{lead_id}", RECENT_ALERTS_KEY, counts],
                    args=[published_key(alert), orjson.dumps(alert).decode(), ALERTS_CHANNEL, _GUARD_TTL_S,
                          int(emitted.timestamp() * 1000), keep, count_field(alert), _COUNTS_TTL_S],
                    client=pipe,
                )
            await pipe.execute()

    async def already_sent(self, partition: int) -> set[tuple[str, str]]:
        """(lead id, published key) of every alert already in the topic partition."""
        consumer = AIOKafkaConsumer(**self.kafka.client_options(), enable_auto_commit=False, group_id=None)
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
                    sent.add((clock_id(alert), published_key(alert)))
            return sent
        finally:
            await consumer.stop()
