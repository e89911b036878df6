"""The process roles: ``worker``, ``ingest``, ``board`` and ``run`` (everything on one machine, one HTTP port)."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import redis.asyncio as aioredis
from mode import Service, Worker
from prometheus_client import CollectorRegistry

from salespulse import console
from salespulse.config import ConfigError, load_config
from salespulse.embedded.durable import CatchUp, DataDirInUse, SeedResult, lock_data_dir, reseed
from salespulse.embedded.journal import JournalWriter, trim_segments
from salespulse.handlers.crm import CrmWebhook, IgnoredCounter, build_crm_webhooks
from salespulse.handlers.crm.enricher import enricher_for
from salespulse.handlers.event_log import EventLog, Journal
from salespulse.handlers.http import HttpServer, build_http_app
from salespulse.handlers.webhooks import GenericWebhook
from salespulse.kafka_connection import KafkaConnection, KafkaUnavailable, wait_for_kafka
from salespulse.redis_connection import RedisUnavailable, redis_client, wait_for_redis
from salespulse.logs import logging_config
from salespulse.preflight import ConfigurationError
from salespulse.settings import Settings
from salespulse.engine.memory import GarbageCollection
from salespulse.topics import ensure_topics
from salespulse.engine.worker import WorkerRuntime
from salespulse.worker_summary import worker_snapshot

if TYPE_CHECKING:
    from salespulse.board.live import BoardHub

log = logging.getLogger(__name__)


__all__ = ["ConfigurationError", "run_all", "run_ingest", "run_worker"]


def is_loopback(host: str) -> bool:
    """True if ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


class EventLogService(Service):
    """Starts and stops the ingest producer with the process."""

    def __init__(self, event_log: EventLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_log = event_log

    async def on_start(self) -> None:
        await self.event_log.start()

    async def on_stop(self) -> None:
        await self.event_log.stop()


class SimulatorService(Service):
    """Runs ``salespulse simulate`` against this process's own webhook endpoint (``run --simulate``)."""

    def __init__(self, url: str, secret: str | None, options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.secret = secret
        self.options = options
        self._stop = asyncio.Event()

    @Service.task
    async def _run_simulation(self) -> None:
        from salespulse.simulate import simulate

        await simulate(self.url, secret=self.secret, stop=self._stop, console=None, **self.options)

    async def on_stop(self) -> None:
        self._stop.set()


def _prepare(settings: Settings, need_redis: bool = True) -> None:
    """Check Kafka (and Redis) as configured and create the contract's topics, within the startup timeout.

    A refused login or an untrusted certificate ends the start at once with one line (ConfigurationError).
    """
    _before_worker(_check_and_create_topics(settings, need_redis))


def _before_worker(coroutine: Any) -> Any:
    """Run a coroutine to completion before the worker's own event loop exists."""
    result = asyncio.run(coroutine)
    # Faust's Worker picks up the current event loop; asyncio.run() left none behind.
    asyncio.set_event_loop(asyncio.new_event_loop())
    return result


async def _check_and_create_topics(settings: Settings, need_redis: bool) -> None:
    deadline = time.monotonic() + settings.startup_timeout_s
    kafka = KafkaConnection.from_settings(settings)
    try:
        await wait_for_kafka(kafka, settings.startup_timeout_s)
        if need_redis:
            client = redis_client(settings)
            try:
                await wait_for_redis(client, settings.redis_url or "", max(deadline - time.monotonic(), 1.0))
            finally:
                await client.aclose()
    except (KafkaUnavailable, RedisUnavailable) as exc:
        raise ConfigurationError(str(exc)) from None
    while True:
        try:
            await ensure_topics(kafka, settings.partitions, settings.kafka_replication_factor)
            return
        except Exception as exc:  # the broker may still be starting (compose, k8s): retry, then say so
            if time.monotonic() >= deadline:
                raise ConfigurationError(
                    f"cannot create the topics on Kafka at {kafka.describe()} within {settings.startup_timeout_s:g} s "
                    f"(SALESPULSE_KAFKA_URL): {type(exc).__name__}: {exc}"
                ) from None
            log.warning("Kafka at %s not ready yet (%s); retrying", kafka.bootstrap, type(exc).__name__)
            await asyncio.sleep(1.0)


def _redis_readiness(client: aioredis.Redis) -> Any:
    async def check() -> bool:
        try:
            return bool(await asyncio.wait_for(client.ping(), 2.0))
        except Exception:
            return False

    return check


def _board_hub(settings: Settings, redis_client: aioredis.Redis) -> "BoardHub":
    """The live board's snapshot hub, reading the Redis outputs with the config's names and stage order."""
    from salespulse.board.live import BoardHub
    from salespulse.board.snapshot import BoardReader, BoardView

    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    view = BoardView.from_config(config, settings.tz, settings.lead_response_sla_seconds)
    return BoardHub(redis_client, BoardReader(redis_client, view))


def _worker_services(
    settings: Settings,
    registry: CollectorRegistry,
    with_ingest: bool,
    journal: Journal | None = None,
    seeded: SeedResult | None = None,
    with_board: bool = False,
) -> tuple[faust.App, list[Service]]:
    """The worker's services (and ingest's with ``with_ingest``); ``seeded``: hold the outputs until caught up."""
    redis = redis_client(settings)
    runtime = WorkerRuntime(settings, registry, redis)
    readiness = {"redis": _redis_readiness(redis), "worker": runtime.ready}
    # The collector must not rescan the metric state in memory: see salespulse/engine/memory.py.
    services: list[Service] = [GarbageCollection(), console.ConsoleSummary(worker_snapshot(runtime))]
    outputs: list[Service] = [runtime.flusher]
    if runtime.alert_clock is not None:
        outputs.append(runtime.alert_clock)
    if runtime.awaiting_publisher is not None:
        outputs.append(runtime.awaiting_publisher)
    if seeded is None:
        services += outputs
    else:
        catch_up = _catch_up(settings, runtime, outputs, seeded)
        services.append(catch_up)
        readiness["journal"] = catch_up.ready
    webhook = None
    crm_webhooks: list[CrmWebhook] = []
    if with_ingest:
        event_log = EventLog(
            KafkaConnection.from_settings(settings), registry, settings.publish_timeout_seconds, journal
        )
        readiness["kafka"] = event_log.ping
        webhook = GenericWebhook(event_log, _secret(settings), registry)
        ignored = IgnoredCounter(registry)
        crm_webhooks = _crm_webhooks(settings, event_log, webhook, ignored)
        services.insert(0, EventLogService(event_log))
        services[1:1] = _crm_enrichers(settings, event_log, registry, ignored)
    else:
        readiness["kafka"] = runtime.flusher.topics.ping
    app = build_http_app(registry, readiness, webhook, crm_webhooks, body_timeout_s=settings.http_body_timeout_s)
    if with_board:
        from salespulse.board.routes import add_board_routes

        hub = _board_hub(settings, redis)
        add_board_routes(app, hub)
        services.append(hub)
    services.append(HttpServer(app, settings.http_host, settings.http_port, settings.http_header_timeout_s,
                               settings.http_max_connections))
    return runtime.app, services


def _catch_up(settings: Settings, runtime: WorkerRuntime, outputs: list[Service], seeded: SeedResult) -> CatchUp:
    """Starts the outputs once the re-seeded journal is reprocessed; alerts sent before are read back first."""
    clock = runtime.alert_clock  # its family's alert state: alerts of the journal may have gone out already

    def before_release() -> None:
        if seeded.alerts and clock is not None:
            for source in clock.sources:
                source.inherited_unpublished.update(range(settings.partitions))

    return CatchUp(seeded, lambda: runtime.positions, outputs, before_release)


def _crm_webhooks(
    settings: Settings, event_log: EventLog, webhook: GenericWebhook, ignored: IgnoredCounter
) -> list[CrmWebhook]:
    """The enabled CRM endpoints, mapped through the config file's ``[crm]`` section."""
    try:
        crm = load_config(settings.config).crm
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    hooks = build_crm_webhooks(settings, crm, event_log, webhook.rejected, ignored)
    for hook in hooks:
        log.info("CRM endpoint %s enabled", hook.path)
    return hooks


def _crm_enrichers(
    settings: Settings, event_log: EventLog, registry: CollectorRegistry, ignored: IgnoredCounter
) -> list[Service]:
    """The HubSpot enricher when its API token is set: part of ingest (and so of ``run``), after the event log."""
    enricher = enricher_for(settings, load_config(settings.config).crm.hubspot, event_log, registry, ignored)
    if enricher is None:
        return []
    log.info("HubSpot enrichment through %s enabled", settings.hubspot_api_url)
    return [enricher]


def _secret(settings: Settings) -> str | None:
    return settings.webhook_secret.get_secret_value() if settings.webhook_secret else None


def _execute(
    app: faust.App | None, services: list[Service], loglevel: str, log_config: dict[str, Any] | None = None
) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    # mode's Worker applies this logging setup again when it starts (the CLI applied it first); quiet:
    # no Faust banner or spinner, the console shows salespulse's own banner and summary lines.
    options: dict[str, Any] = {
        "loglevel": loglevel,
        "logging_config": copy.deepcopy(log_config or logging_config(loglevel)),
        "redirect_stdouts": False,
        "quiet": True,
    }
    worker: Worker = faust.Worker(app, *services, **options) if app is not None else Worker(*services, **options)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_worker(settings: Settings, loglevel: str = "info", log_config: dict[str, Any] | None = None) -> int:
    """``salespulse worker``: consume events, keep tables, publish metrics; serves health and /metrics."""
    _require_external(settings)
    _prepare(settings)
    app, services = _worker_services(settings, CollectorRegistry(), with_ingest=False)
    console.announce(console.worker_banner(settings))
    return _execute(app, services, loglevel, log_config)


def run_ingest(
    settings: Settings, insecure: bool = False, loglevel: str = "info", log_config: dict[str, Any] | None = None
) -> int:
    """``salespulse ingest``: the webhook endpoints; refuses to run unsigned unless ``insecure``."""
    _require_external(settings, need_redis=False)
    if settings.webhook_secret is None and not insecure:
        raise ConfigurationError(
            "SALESPULSE_WEBHOOK_SECRET is not set: refusing to accept unsigned webhooks (pass --insecure to allow)"
        )
    _prepare(settings, need_redis=False)
    registry = CollectorRegistry()
    event_log = EventLog(KafkaConnection.from_settings(settings), registry, settings.publish_timeout_seconds)
    webhook = GenericWebhook(event_log, _secret(settings), registry)
    ignored = IgnoredCounter(registry)
    crm_webhooks = _crm_webhooks(settings, event_log, webhook, ignored)
    readiness = {"kafka": event_log.ping}
    app = build_http_app(registry, readiness, webhook, crm_webhooks, body_timeout_s=settings.http_body_timeout_s)
    http = HttpServer(app, settings.http_host, settings.http_port, settings.http_header_timeout_s,
                      settings.http_max_connections)
    enrichers = _crm_enrichers(settings, event_log, registry, ignored)
    summary = console.ConsoleSummary(
        console.monotonic_snapshot(lambda: console.counter_total(event_log.published)), what="events published"
    )
    console.announce(console.ingest_banner(settings, [hook.path for hook in crm_webhooks]))
    return _execute(None, [EventLogService(event_log), *enrichers, http, summary], loglevel, log_config)


def run_board(settings: Settings, loglevel: str = "info", log_config: dict[str, Any] | None = None) -> int:
    """``salespulse board``: the live board over a production Redis (reads only); serves /, /healthz, /readyz."""
    from salespulse.board.routes import add_board_routes

    if settings.redis_url is None:
        raise ConfigurationError("SALESPULSE_REDIS_URL is required for this role (e.g. redis://redis:6379/0)")
    redis = redis_client(settings)
    hub = _board_hub(settings, redis)
    app = build_http_app(CollectorRegistry(), {"redis": _redis_readiness(redis)})
    add_board_routes(app, hub)
    http = HttpServer(app, settings.http_host, settings.http_port, settings.http_header_timeout_s,
                      settings.http_max_connections)
    return _execute(None, [hub, http], loglevel, log_config)


def run_all(
    settings: Settings,
    simulate_options: dict[str, Any] | None = None,
    loglevel: str = "info",
    log_config: dict[str, Any] | None = None,
    ephemeral: bool = False,
) -> int:
    """``salespulse run``: embedded broker and Redis unless URLs are given, then ingest and a worker.

    Durable unless ``ephemeral``: the embedded broker is re-seeded from the journal in the data
    directory and the embedded Redis keeps an append-only file there. Once the servers are up, a banner
    says where everything is (webhooks, /metrics, the board, Redis, data and what it keeps).
    """
    from salespulse.embedded.broker import EmbeddedBroker
    from salespulse.embedded.redis_server import EmbeddedRedis

    if settings.webhook_secret is None and not is_loopback(settings.http_host):
        raise ConfigurationError(
            f"refusing to listen on {settings.http_host} without SALESPULSE_WEBHOOK_SECRET: "
            "set a secret, or keep SALESPULSE_HTTP_HOST on loopback"
        )
    if settings.kafka_url is None and not ephemeral and 0 < settings.journal_days < settings.retention_days:
        raise ConfigurationError(
            f"SALESPULSE_JOURNAL_DAYS={settings.journal_days} is shorter than SALESPULSE_RETENTION_DAYS="
            f"{settings.retention_days}: a restart would lose windows still kept (use 0 to keep every day)"
        )
    with ExitStack() as stack:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if not ephemeral and (settings.kafka_url is None or settings.redis_url is None):
            try:
                stack.enter_context(lock_data_dir(data_dir))
            except DataDirInUse as exc:
                raise ConfigurationError(str(exc)) from None
        journaled = settings.kafka_url is None and not ephemeral
        kafka_hint = redis_hint = ""
        if settings.kafka_url is None:
            broker = stack.enter_context(EmbeddedBroker(log_path=data_dir / "tansu.log"))
            kafka_hint = "(embedded Tansu broker, for development)"
            tansu = True if settings.tansu_compat is None else settings.tansu_compat
            settings = settings.model_copy(update={"kafka_url": broker.url, "tansu_compat": tansu})
        redis_dir = None
        if settings.redis_url is None:
            redis_dir = None if ephemeral else data_dir / "redis"
            redis_server = stack.enter_context(EmbeddedRedis(log_path=data_dir / "redis.log", data_dir=redis_dir))
            redis_hint = " (embedded)"
            settings = settings.model_copy(update={"redis_url": redis_server.url})
        _prepare(settings)
        journal: JournalWriter | None = None
        seeded: SeedResult | None = None
        if journaled:
            journal, seeded = _open_journal(settings, data_dir / "journal")
            stack.callback(journal.close)
        app, services = _worker_services(
            settings, CollectorRegistry(), with_ingest=True,
            journal=journal.append if journal else None, seeded=seeded, with_board=True,
        )  # fmt: skip
        if simulate_options is not None:
            url = f"http://{settings.http_host}:{settings.http_port}"
            services.append(SimulatorService(url, _secret(settings), simulate_options))
        data_hint = _what_data_keeps(ephemeral, journaled, redis_dir is not None)
        console.announce(console.run_banner(settings, simulate_options is not None, kafka_hint, redis_hint, data_hint))
        return _execute(app, services, loglevel, log_config)


def _what_data_keeps(ephemeral: bool, journaled: bool, redis_kept: bool) -> str:
    if ephemeral:
        return "(--ephemeral: nothing is kept after a stop; logs only)"
    kept = [what for what, here in (("the event journal", journaled), ("Redis", redis_kept)) if here]
    if not kept:
        return "(logs; the data is in your Kafka and Redis)"
    return f"({' and '.join(kept)}, kept across restarts; SALESPULSE_DATA_DIR)"


def _open_journal(settings: Settings, directory: Path) -> tuple[JournalWriter, SeedResult]:
    """Trim old journal days, re-seed the fresh broker from the rest, and open it for appends."""
    if settings.journal_days:
        for path in trim_segments(directory, settings.journal_days):
            log.info("journal: deleted %s (older than SALESPULSE_JOURNAL_DAYS)", path.name)
    journal = JournalWriter(directory)  # repairs a torn last record before anything reads it
    seeded = _before_worker(reseed(settings.kafka_bootstrap, directory, settings.redis_url, settings.partitions))
    if seeded.records:
        log.info(
            "journal: %d records and %d sent alerts re-seeded in %.1f s; the worker reprocesses them before publishing",
            seeded.records, seeded.alerts, seeded.seconds,
        )
    return journal, seeded


def _require_external(settings: Settings, need_redis: bool = True) -> None:
    if settings.kafka_url is None:
        raise ConfigurationError("SALESPULSE_KAFKA_URL is required for this role (e.g. kafka://kafka:9092)")
    if need_redis and settings.redis_url is None:
        raise ConfigurationError("SALESPULSE_REDIS_URL is required for this role (e.g. redis://redis:6379/0)")
