"""Writing validated events to ``salespulse.events``, keyed by lead, deal or rep; failures become 503s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry, Counter

from salespulse.kafka_connection import KafkaConnection
from salespulse.models.events import Event, event_to_json
from salespulse.topics import CRM_RAW_TOPIC, DLQ_TOPIC, EVENTS_TOPIC, MAX_MESSAGE_BYTES, broker_reachable

#: Writes (topic, key, value, timestamp ms) records durably before they go to the broker (the embedded
#: run's journal, salespulse/embedded/journal.py); raises ``OSError`` if it cannot.
Journal = Callable[[Sequence[tuple[str, bytes, bytes, int]]], Awaitable[None]]


class EventLogUnavailable(Exception):
    """The broker did not take the events in time; the sender should retry (dedup makes that safe)."""


class EventLogRefused(EventLogUnavailable):
    """The broker or producer refused the records for good (over the message size): a retry fails the same way,
    so the sender gets a 4xx, not a 503."""


#: Errors a retry cannot fix.
_PERMANENT = (MessageSizeTooLargeError,)


def _failure(topic: str, exc: Exception) -> EventLogUnavailable:
    kind = EventLogRefused if isinstance(exc, _PERMANENT) else EventLogUnavailable
    return kind(f"could not write to {topic}: {type(exc).__name__}: {exc}")


class EventLog:
    """An aiokafka producer (acks=all) for canonical events, with a per-request deadline."""

    def __init__(
        self, kafka: KafkaConnection, registry: CollectorRegistry, timeout_s: float, journal: Journal | None = None
    ) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.journal = journal
        self._producer: AIOKafkaProducer | None = None
        self.published = Counter(
            "salespulse_events_published", "Events written to salespulse.events, by type.", ["type"], registry=registry
        )

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **self.kafka.client_options(),
            acks="all",
            linger_ms=2,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=int(self.timeout_s * 1000),
            retry_backoff_ms=200,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, events: Sequence[Event]) -> None:
        """Write all events and wait for the broker's acknowledgement, or raise ``EventLogUnavailable``."""
        if self._producer is None:
            raise EventLogUnavailable("event log is not started")
        producer = self._producer
        stamp = int(time.time() * 1000)  # the journal and the broker get the same arrival time
        records = [(EVENTS_TOPIC, event.partition_key.encode(), event_to_json(event), stamp) for event in events]

        async def send_all() -> None:
            await self._journal(records)
            futures = [
                await producer.send(topic, key=key, value=value, timestamp_ms=at) for topic, key, value, at in records
            ]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_all(), timeout=self.timeout_s)
        except Exception as exc:
            raise _failure(EVENTS_TOPIC, exc) from exc
        for event in events:
            self.published.labels(event.type).inc()

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        """Write one record to ``salespulse.events.dlq`` and wait for the ack, or raise ``EventLogUnavailable``."""
        await self._write_one(DLQ_TOPIC, key, value, journaled=True)

    async def defer(self, endpoint: str, body: bytes) -> None:
        """Keep a CRM request whole on ``salespulse.crm.raw`` for the enricher; acked before the CRM's answer.

        One key per CRM: its records stay in order on one partition, read by one enricher that holds the
        CRM's API rate budget (HubSpot's limit is per portal).

        Not journaled: the events the enricher makes of it are (through :meth:`publish`); re-seeding the
        raw requests would have a restarted run enrich its whole history again."""
        await self._write_one(CRM_RAW_TOPIC, endpoint.encode(), body, journaled=False)

    async def _write_one(self, topic: str, key: bytes, value: bytes, journaled: bool) -> None:
        if self._producer is None:
            raise EventLogUnavailable("event log is not started")
        producer = self._producer
        stamp = int(time.time() * 1000)

        async def send() -> None:
            if journaled:
                await self._journal([(topic, key, value, stamp)])
            await (await producer.send(topic, key=key, value=value, timestamp_ms=stamp))

        try:
            await asyncio.wait_for(send(), timeout=self.timeout_s)
        except Exception as exc:
            raise _failure(topic, exc) from exc

    async def _journal(self, records: Sequence[tuple[str, bytes, bytes, int]]) -> None:
        """On disk before the broker sees them: a restart of the embedded run re-seeds from there."""
        if self.journal is not None:
            await self.journal(records)

    async def ping(self) -> bool:
        """True if the broker answers a metadata request."""
        return await broker_reachable(self._producer)
