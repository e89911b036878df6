"""The worker: a Faust app whose one agent feeds batches of ``salespulse.events`` to the metric families.

Flow: the records of each fetch (a batch agent, below Faust's per-message stream) -> ``BatchProcessor``
(parse, dedup, families, changelogged cells) -> ``Flusher`` (every ~250 ms: Redis,
``salespulse.metrics.*``) and, at scrape time, Prometheus.
"""

from __future__ import annotations

from salespulse.engine.stores import family_context

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from faust.types import TP
import redis.asyncio as aioredis
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from salespulse.config import load_config
from salespulse.engine.alert_clock import AlertClock, AlertingFamily, AlertSource
from salespulse.engine.awaiting import AWAITING_TTL_S, AwaitingPublisher
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.faust.app import SalespulseApp
from salespulse.engine.faust.batch_consumer import BatchAgent
from salespulse.engine.faust.internals import read_offsets
from salespulse.engine.faust.tables import PartitionKeyedTable
from salespulse.engine.flusher import Flusher
from salespulse.engine.processor import BatchProcessor, Record, StagedBatch, dead_letter_value
from salespulse.families import registry
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.windowed import WindowedFamily
from salespulse.kafka_connection import KafkaConnection
from salespulse.models.events import Event, event_to_json
from salespulse.outputs.alertmanager import AlertmanagerSink
from salespulse.outputs.alerts import AlertSinks
from salespulse.outputs.awaiting import AwaitingSink
from salespulse.outputs.board_metrics import BoardInfoCollector
from salespulse.outputs.prometheus import ConsumerLagCollector, WorkerHealth
from salespulse.outputs.redis import RedisPublisher
from salespulse.outputs.topics import TopicPublisher
from salespulse.settings import Settings
from salespulse.topics import DLQ_TOPIC, EVENTS_TOPIC, REPLAY_HEADER

log = logging.getLogger(__name__)


#: RocksDB memory bounded for a worker that also holds its working state in Python (Faust's defaults
#: are a 2 GiB block cache and three 64 MiB write buffers per partition).
ROCKSDB_OPTIONS = {"block_cache_size": 32 * 2**20, "write_buffer_size": 8 * 2**20, "max_write_buffer_number": 2}


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust app options; on Tansu one record per producer batch (else table recovery goes wrong)."""
    options: dict[str, Any] = {
        "broker": settings.kafka_url,
        "broker_credentials": KafkaConnection.from_settings(settings).faust_credentials(),
        "store": f"{settings.state_store}://",
        "datadir": str(settings.data_dir / "faust"),  # Faust makes <id>-data/ there even for memory://
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.kafka_replication_factor,
        "web_enabled": False,
        "autodiscover": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_every": 10_000,
        "broker_commit_interval": settings.commit_interval_s,
        "stream_buffer_maxsize": 16_384,
        "broker_max_poll_records": settings.batch_max_events,  # one fetch is one batch
        "logging_config": None,
    }
    if settings.use_tansu_workarounds:
        options.update(
            producer_max_batch_size=1,
            broker_session_timeout=6,
            broker_rebalance_timeout=6,
            broker_heartbeat_interval=1,
        )
    return options


def arrival_time(message: Any) -> float:
    """When ingest wrote a record (its Kafka timestamp); infinitely late for a replayed one, so it never alerts."""
    return _arrival(message.headers, message.timestamp)


def to_record(consumer_record: ConsumerRecord) -> Record:
    """The processor's record of an aiokafka record (timestamp in ms), its 4th element as ``arrival_time``."""
    value = consumer_record.value if consumer_record.value is not None else b""  # a null value is dead-lettered
    if consumer_record.timestamp is None:  # no timestamp: the processor takes "now"
        return (consumer_record.partition, consumer_record.offset, value)
    return (consumer_record.partition, consumer_record.offset, value, _arrival(consumer_record.headers, consumer_record.timestamp / 1000))


def _arrival(headers: Any, timestamp_s: float) -> float:
    if headers:
        names = headers.keys() if isinstance(headers, dict) else (name for name, _ in headers)
        if REPLAY_HEADER in names:
            return float("inf")
    return timestamp_s


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading partitions failed (retried at the next scrape or flush)", exc_info=task.exception())


class UnwritableState(RuntimeError):
    """The worker's memory holds a batch that failed half-way: it must not be written (the worker restarts)."""


class WorkerRuntime:
    """Everything a worker process runs, built explicitly from settings (no module-level app)."""

    def __init__(self, settings: Settings, registry_: CollectorRegistry, redis_client: aioredis.Redis) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
        self.app = SalespulseApp(
            settings.app_id, fetch_max_wait_ms=settings.batch_within_ms, **faust_settings(settings)
        )
        self.events_topic = self.app.topic(
            EVENTS_TOPIC, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )
        self.dlq_topic = self.app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw")
        self.table = PartitionKeyedTable(
                self.app,
                name="state",
                beacon=self.app.tables.beacon,
                partitions=settings.partitions,
                # Faust derives table codecs from these types (not from a Schema): str keys as JSON,
                # values as raw bytes that CellStore/DedupIndex encode with orjson themselves.
                key_type=str,
                value_type=bytes,
                help="salespulse metric cells and event-id dedup records, keyed '<partition>|<name>'",
                options=ROCKSDB_OPTIONS if settings.state_store == "rocksdb" else None,
            )
        self.app.tables.add(self.table)
        config = load_config(settings.config)
        enabled = settings.family_names
        entries = {name: registry.load(name) for name in registry.NAMES}
        #: Target kinds of a family's own fields are published with it; the activity family takes the others.
        target_kinds = {name: frozenset(entry.spec.plain_fields) for name, entry in entries.items() if entry.spec.record.targets_doc}
        self.families: dict[str, WindowedFamily] = {}
        for name in enabled:
            context = family_context(
                self.table, config, settings.tz, settings.retention_days * 86400, settings.lead_response_sla_seconds,
                foreign_target_kinds=frozenset().union(*(k for n, k in target_kinds.items() if n != name)),
                partitions=settings.partitions,
            )
            self.families[name] = entries[name].build(context)
        families = list(self.families.values())
        #: Events the families write to ``salespulse.events`` at start (configuration as events).
        self.startup_events = [event for family in families for event in family.startup_events()]
        self.processor = BatchProcessor(
            DedupIndex(self.table, settings.dedup_horizon_hours * 3600), families, self._dead_letter
        )
        self.health = WorkerHealth(registry_)
        for family in families:
            registry_.register(family.collector(self.owned_partitions, skipped=self.health.skipped))
        # Next offset to process per owned partition of salespulse.events (for the consumer lag).
        self.positions: dict[int, int] = {}
        registry_.register(ConsumerLagCollector(EVENTS_TOPIC, self.consumer_lag))
        registry_.register(
            BoardInfoCollector(
                config,
                self.families.get("activity"),
                cast(PipelineFamily | None, self.families.get("pipeline")),
                self.owned_partitions,
            )
        )
        self.flusher = Flusher(
            families,
            self.owned_partitions,
            RedisPublisher(
                redis_client,
                derived={family.name: family.derived.redis_spec() for family in families},
                beside={family.name: family.beside_rates for family in families if family.beside_rates},
            ),
            TopicPublisher(KafkaConnection.from_settings(settings)),
            self.health,
            interval_s=settings.flush_interval_ms / 1000,
            max_pending=settings.flush_max_updates,
            slow_budget=settings.flush_slow_budget,
        )
        #: Alerts come from families' states (the lead-response SLA, the pipeline's stall clocks): None without any.
        sources = [family for family in families if isinstance(family, AlertSource)] + [
            source for family in families if isinstance(family, AlertingFamily) for source in family.alert_sources
        ]
        self.alert_clock = None if not sources else AlertClock(
            sources,
            self.owned_partitions,
            AlertSinks(redis_client, KafkaConnection.from_settings(settings), settings.tz),
            self.health,
            alertmanager=AlertmanagerSink(settings.alertmanager_urls, config.alerts.link, registry_)
            if settings.alertmanager_urls else None,
            resend_s=config.alerts.resend_seconds,
            resolved_resend_s=config.alerts.resolved_resend_seconds,
        )
        #: Leads waiting now, for the live board: with the alert clock, from the same lead states.
        lead_response = self.families.get("lead_response")
        self.awaiting_publisher = None if not isinstance(lead_response, LeadResponseFamily) else AwaitingPublisher(
            lead_response, self.owned_partitions, AwaitingSink(redis_client, AWAITING_TTL_S), self.health
        )
        if self.awaiting_publisher is not None:
            self.flusher.on_redis_lost.append(self.awaiting_publisher.refresh_all)
        self._unpersisted: StagedBatch | None = None
        self._poisoned = False
        self._loader: asyncio.Future[None] | None = None
        self.app.batch_agent(self.events_topic, BatchAgent(self._consume, self._persist, self._load))
        if self.startup_events:
            self.app.task(self._send_startup_events)
        self.app.on_partitions_revoked.connect(cast(Any, self._on_revoked))  # mode's signal types want **signal

    async def _consume(self, consumer_records: Sequence[ConsumerRecord]) -> None:
        """The batch agent of ``salespulse.events``: applies a fetch; ``_persist`` writes it before its commit."""
        await self._count([to_record(r) for r in consumer_records])

    async def _load(self, consumer_records: Sequence[ConsumerRecord]) -> None:
        """Before a fetch is handled: load the state of its partitions without blocking the loop (scrapes)."""
        await self.processor.load({record.partition for record in consumer_records})

    async def _persist(self) -> None:
        """Write every batch counted since the last call (the consumer calls this before committing their offsets).

        Raises ``UnwritableState`` once a batch failed half-way: nothing more is written or committed, and
        the restarted worker replays from the last commit.
        """
        if self._poisoned:
            raise UnwritableState("a batch failed after changing memory: restart to replay from the last commit")
        staged, self._unpersisted = self._unpersisted, None
        if staged is not None:
            self.processor.persist(staged)

    async def _count(self, records: list[Record]) -> None:
        try:
            staged = self.processor.stage(records)
            stats = staged.stats
            if stats.follow_ups:
                await self._deliver_follow_ups(stats.follow_ups)
        except BaseException:
            # stage() already admitted ids and touched cells in memory; writing any of that under an
            # earlier batch's watermark would count this batch twice on replay, so write nothing more.
            self._poisoned = True
            raise
        # Follow-ups are acked: the batch may be written, which the consumer has done (``_persist``)
        # before it commits these offsets; batches are merged so each cell is written once per commit.
        self._unpersisted = staged if self._unpersisted is None else self._unpersisted.merge(staged)
        for partition, last_offset in staged.last_offsets.items():
            self.positions[partition] = max(self.positions.get(partition, 0), last_offset + 1)
        self.health.batch_events.observe(len(records))
        self.health.events.labels("counted").inc(stats.processed)
        self.health.events.labels("duplicate").inc(stats.duplicates)
        self.health.events.labels("dead_letter").inc(stats.dead_lettered)
        self.flusher.notify()

    async def _deliver_follow_ups(self, follow_ups: list[Event]) -> None:
        """Write follow-up events to ``salespulse.events`` and wait for the broker's acks (before state is written)."""
        pending = [
            await self.events_topic.send(key=event.partition_key.encode(), value=event_to_json(event))
            for event in follow_ups
        ]
        await asyncio.gather(*pending)

    async def _send_startup_events(self) -> None:
        """Configuration entering as events (config quotas as ``quota.set``; fixed ids: dedup keeps one)."""
        try:
            await self._deliver_follow_ups(self.startup_events)
        except Exception:  # the next start sends them again; a real quota.set needs none of this
            log.exception("could not send the %d start-up events", len(self.startup_events))

    def _dead_letter(self, record: Record, reason: str) -> None:
        log.warning("dead-lettered %s/%s: %s", record[0], record[1], reason)
        self.dlq_topic.send_soon(key=str(record[0]).encode(), value=dead_letter_value(record, reason))

    async def _on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == EVENTS_TOPIC:
                self.processor.drop_partition(tp.partition)
                self.positions.pop(tp.partition, None)

    async def ready(self) -> bool:
        """True once the worker has joined its group, recovered its tables and owns partitions."""
        return self.app.started and not self.app.rebalancing and bool(self.app.assignor.assigned_actives())

    def owned_partitions(self) -> set[int]:
        """Partitions of ``salespulse.events`` this worker actively owns and has loaded (empty while rebalancing).

        Assigned partitions not loaded yet are loaded in the background (taken over with no new traffic: their
        state is still published) and left out until then: a scrape never waits for a large state to load."""
        if self.app.rebalancing:
            return set()
        assigned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == EVENTS_TOPIC}
        missing = assigned - self.processor.loaded
        if missing and (self._loader is None or self._loader.done()):
            self._loader = asyncio.ensure_future(self.processor.load(missing))
            self._loader.add_done_callback(_log_failure)
        return assigned - missing

    def consumer_lag(self) -> dict[int, int | None]:
        """Per owned partition of ``salespulse.events``: high watermark minus position (None while unknown).

        The position is the next offset this worker has processed; before its first record of a partition
        it is where Faust's consumer started reading (the committed offset), so a worker stuck from its
        start still shows its lag.
        """
        owned = self.owned_partitions()
        if not owned:
            return {}
        consumer = self.app.consumer
        read = read_offsets(consumer)
        lags: dict[int, int | None] = {}
        for partition in owned:
            tp = TP(EVENTS_TOPIC, partition)
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - consumer not started or partition not fetched yet
                high = None
            position = self.positions.get(partition)
            if position is None:
                position = read.get(tp)
            lags[partition] = None if high is None or position is None else max(0, high - position)
        return lags

