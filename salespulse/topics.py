"""Kafka topic names of the contract, and creating them with the right partitions and policies."""

from __future__ import annotations

import logging

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from salespulse.kafka_connection import KafkaConnection
from salespulse.settings import METRIC_FAMILIES

log = logging.getLogger(__name__)

EVENTS_TOPIC = "salespulse.events"
DLQ_TOPIC = "salespulse.events.dlq"
ALERTS_TOPIC = "salespulse.alerts"
#: CRM requests kept whole until enriched through the CRM's API (HubSpot engagements; docs/crm.md).
CRM_RAW_TOPIC = "salespulse.crm.raw"
#: Header ``salespulse replay`` puts on the events it writes: measured like any other, never alerted on.
REPLAY_HEADER = "salespulse-replay"
#: The largest message aiokafka's producer sends (its ``max_request_size`` default) and Kafka's default
#: ``message.max.bytes``: a dead-letter record must stay well under it, whatever it carries.
MAX_MESSAGE_BYTES = 1024 * 1024
#: What a dead-letter record keeps of the payload it could not process (the rest is cut, with a note).
DEAD_LETTER_RAW_BYTES = 64 * 1024
_DEAD_LETTER_TEXT_CHARS = 2000


def dead_letter_payload(raw: bytes) -> dict[str, object]:
    """The ``raw`` of a dead-letter record, at most ``DEAD_LETTER_RAW_BYTES`` of it; when cut, ``raw_truncated``
    and ``raw_bytes`` (the full size) say so."""
    if len(raw) <= DEAD_LETTER_RAW_BYTES:
        return {"raw": raw.decode("utf-8", errors="replace")}
    kept = raw[:DEAD_LETTER_RAW_BYTES].decode("utf-8", errors="ignore")  # never half a character
    return {"raw": kept, "raw_truncated": True, "raw_bytes": len(raw)}


def bounded_text(text: str, limit: int = _DEAD_LETTER_TEXT_CHARS) -> str:
    """A reason or message of a dead-letter record, cut to ``limit`` characters with a note."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def metrics_topic(family: str) -> str:
    """The metric topic of a family, e.g. ``salespulse.metrics.activity``, ``salespulse.metrics.lead-response``."""
    return f"salespulse.metrics.{family.replace('_', '-')}"


async def ensure_topics(kafka: KafkaConnection, partitions: int, replication_factor: int = 1) -> None:
    """Create the contract's topics that do not exist yet (events and DLQ plain, metric topics compacted)."""
    wanted = [
        NewTopic(EVENTS_TOPIC, partitions, replication_factor),
        NewTopic(DLQ_TOPIC, partitions, replication_factor),
        NewTopic(ALERTS_TOPIC, partitions, replication_factor),
        NewTopic(CRM_RAW_TOPIC, partitions, replication_factor),
        *(
            NewTopic(metrics_topic(f), partitions, replication_factor, topic_configs={"cleanup.policy": "compact"})
            for f in METRIC_FAMILIES
        ),
    ]
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


async def broker_reachable(producer: AIOKafkaProducer | None, timeout_s: float = 2.0) -> bool:
    """True if the broker answers a metadata request on this producer's connection (readiness)."""
    if producer is None:
        return False
    try:
        return bool(await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s))
    except Exception:
        return False
