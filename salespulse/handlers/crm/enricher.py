"""The HubSpot enricher: reads ``salespulse.crm.raw``, asks HubSpot's API, writes canonical events.

A task of the ingest process (and so of ``salespulse run``) when ``SALESPULSE_HUBSPOT_ACCESS_TOKEN`` is set.
The webhook endpoint writes each authenticated batch to ``salespulse.crm.raw`` (acks=all) before it answers,
so HubSpot never waits on its own API. For each raw record, in order, the enricher:

1. enriches it (:func:`~salespulse.handlers.crm.hubspot_enrich.enrich_batch`); while HubSpot cannot answer
   (429, 5xx, network, a refused token) it waits and tries the same record again: nothing is skipped;
2. writes the canonical events to ``salespulse.events`` and each item HubSpot refused for good (404 deleted,
   another 4xx), with its reason, to ``salespulse.events.dlq``;
3. only then commits the record's offset (consumer group ``<app id>-crm-enricher``).

A crash between 2 and 3 re-enriches the record after the restart; its event ids come from HubSpot's ids, so
the worker's dedup drops the repeats (a repeated dead letter is possible: the DLQ is a log).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service
from prometheus_client import CollectorRegistry, Counter, Gauge

from salespulse.crm_config import HubSpotMapping
from salespulse.handlers.crm.common import FieldProblem, Unnormalisable
from salespulse.handlers.crm.endpoint import EventSink, IgnoredCounter
from salespulse.handlers.crm.hubspot_api import ApiFailures, ApiUnavailable, HubSpotApi
from salespulse.handlers.crm.hubspot_enrich import Enriched, enrich_batch
from salespulse.handlers.event_log import EventLogUnavailable
from salespulse.kafka_connection import KafkaConnection
from salespulse.topics import CRM_RAW_TOPIC, bounded_text, dead_letter_payload

log = logging.getLogger(__name__)

#: The longest wait between two tries of a batch HubSpot's API cannot take now.
MAX_RETRY_PAUSE_S = 60.0


def crm_raw_consumer(kafka: KafkaConnection, group_id: str, **overrides: Any) -> AIOKafkaConsumer:
    """The enricher's consumer (the one place it is built), with the connection's TLS and SASL options."""
    options: dict[str, Any] = {
        **kafka.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Short group timeouts: a restarted enricher takes its partition back within seconds.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "rebalance_timeout_ms": 6000,
        # A record may wait long on HubSpot's rate limit before its commit.
        "max_poll_interval_ms": 900_000,
        **overrides,
    }
    return AIOKafkaConsumer(**options)


class EnrichmentMetrics:
    """The enricher's Prometheus families."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "salespulse_crm_enrichment_backlog",
            "CRM requests on salespulse.crm.raw not yet enriched (this enricher's partitions).",
            ["crm"], registry=registry,
        )
        self.records = Counter(
            "salespulse_crm_enrichment_records",
            "CRM requests enriched (outcome: enriched, dead_letter = the whole request could not be read).",
            ["crm", "outcome"], registry=registry,
        )
        self.items_dead = Counter(
            "salespulse_crm_enrichment_dead_lettered",
            "CRM events dead-lettered by the enricher (deleted in the CRM, refused by its API).",
            ["crm"], registry=registry,
        )
        self.retries = Counter(
            "salespulse_crm_enrichment_retries",
            "Times a CRM request was put back because the CRM's API could not answer (see "
            "salespulse_crm_api_failures_total for why).",
            ["crm"], registry=registry,
        )
        self.failures = ApiFailures(registry)


class HubSpotEnricher(Service):
    """Consumes ``salespulse.crm.raw`` (HubSpot records), writes canonical events, then commits."""

    def __init__(self, kafka: KafkaConnection, group_id: str, api: HubSpotApi, mapping: HubSpotMapping, sink: EventSink,
                 metrics: EnrichmentMetrics, ignored: IgnoredCounter | None = None, retry_pause_s: float = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignored = ignored
        self.kafka, self.group_id = kafka, group_id
        self.api, self.mapping, self.sink, self.metrics = api, mapping, sink, metrics
        self.retry_pause_s = retry_pause_s
        self.consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self.consumer = crm_raw_consumer(self.kafka, self.group_id)
        await self.consumer.start()
        self.consumer.subscribe([CRM_RAW_TOPIC])

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.api.close()

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        while not self.should_stop:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=20)
            except KafkaError as exc:
                log.warning("enricher: cannot read %s (%s); retrying", CRM_RAW_TOPIC, exc)
                await self.sleep(1.0)
                continue
            for tp, records in batches.items():
                for record in records:
                    if not await self.handle(record):
                        return  # stopping: the record stays uncommitted and is enriched after the restart
                    await self._commit(consumer, tp, record.offset + 1)
            await self._update_backlog(consumer)

    async def handle(self, record: ConsumerRecord) -> bool:
        """Enrich one raw record and write its results; False if the service stopped first."""
        if record.key != b"hubspot":
            log.warning("salespulse.crm.raw: no enricher for %r; skipped", record.key)
            return True
        body: bytes = record.value or b""
        outcome = "dead_letter"
        pause = self.retry_pause_s
        while True:
            try:
                result = await enrich_batch(body, self.api, self.mapping)
                outcome = "enriched"
                break
            except ApiUnavailable as exc:
                self.metrics.retries.labels("hubspot").inc()
                log.warning("HubSpot API unavailable (%s); retrying in %.1f s", exc, pause)
            except (FieldProblem, Unnormalisable) as exc:
                result = self._unreadable(body, str(exc))
                break
            except Exception as exc:  # an enricher bug must not stop enrichment: keep the batch, say why
                log.exception("enricher failed on a HubSpot batch")
                result = self._unreadable(body, f"enricher error: {type(exc).__name__}")
                break
            if await self._stopping_after(pause):
                return False
            pause = min(pause * 2, MAX_RETRY_PAUSE_S)  # a refused token or a long outage: do not hammer
        while True:
            try:
                await self._write(result)
                break
            except EventLogUnavailable as exc:
                log.warning("enricher: %s; retrying", exc)
            if await self._stopping_after(1.0):
                return False
        self.metrics.records.labels("hubspot", outcome).inc()
        if self.ignored is not None and result.ignored:
            self.ignored.count("hubspot", result.ignored)
        return True

    @staticmethod
    def _unreadable(body: bytes, reason: str) -> Enriched:
        # Bounded like every dead letter: a batch near the body limit must not make a record Kafka refuses.
        return Enriched(dead=[(f"hubspot enrichment: cannot read the batch: {bounded_text(reason)}",
                               dead_letter_payload(body))])

    async def _write(self, result: Enriched) -> None:
        if result.events:
            await self.sink.publish(result.events)
        for reason, raw in result.dead:
            value = orjson.dumps({"reason": reason, "endpoint": "hubspot", "raw": raw, "failed_at": time.time()})
            await self.sink.dead_letter(b"hubspot", value)
            self.metrics.items_dead.labels("hubspot").inc()
            log.warning("%s", reason.split(":")[0] + ": sent to the DLQ")

    async def _stopping_after(self, seconds: float) -> bool:
        await self.sleep(seconds)
        return self.should_stop

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except (CommitFailedError, KafkaError) as exc:
            # The partition moved: whoever has it now re-enriches from the last commit (same event ids).
            log.warning("enricher: commit of %s@%d failed (%s); it will be enriched again", tp, offset, exc)

    async def _update_backlog(self, consumer: AIOKafkaConsumer) -> None:
        backlog = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await consumer.position(tp)
            except Exception:  # not assigned any more
                continue
            backlog += max(0, high - position)
        self.metrics.backlog.labels("hubspot").set(backlog)


def enricher_for(settings: Any, mapping: HubSpotMapping, sink: EventSink, registry: CollectorRegistry,
                 ignored: IgnoredCounter | None = None) -> HubSpotEnricher | None:
    """The HubSpot enricher when ``SALESPULSE_HUBSPOT_ACCESS_TOKEN`` (and the webhook secret) are set."""
    if settings.hubspot_access_token is None or settings.hubspot_client_secret is None:
        return None
    metrics = EnrichmentMetrics(registry)
    api = HubSpotApi(settings.hubspot_api_url, settings.hubspot_access_token.get_secret_value(), metrics.failures,
                     requests_per_10s=settings.hubspot_requests_per_10s, timeout_s=settings.enrich_http_timeout_s)
    return HubSpotEnricher(KafkaConnection.from_settings(settings), f"{settings.app_id}-crm-enricher", api, mapping, sink, metrics,
                           ignored)

