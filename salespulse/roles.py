"""The process roles: ``worker``, ``ingest`` and ``run`` (everything on one machine, one HTTP port)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis
from mode import Service, Worker
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from salespulse.config import ConfigError, load_config
from salespulse.embedded.durable import CatchUp, DataDirInUse, SeedResult, lock_data_dir, reseed
from salespulse.embedded.journal import JournalWriter, trim_segments
from salespulse.handlers.crm import CrmWebhook, IgnoredCounter, build_crm_webhooks
from salespulse.handlers.event_log import EventLog, Journal
from salespulse.handlers.http import HttpServer, build_http_app
from salespulse.handlers.webhooks import GenericWebhook
from salespulse.settings import Settings
from salespulse.streams.memory import GarbageCollection
from salespulse.streams.topics import ensure_topics
from salespulse.streams.worker import WorkerRuntime

log = logging.getLogger(__name__)


class ConfigurationError(Exception):
    """Settings that must not be run as given; the message says what to change."""


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


def _prepare_topics(settings: Settings) -> None:
    """Create the contract's topics, waiting up to the startup timeout for the broker to answer."""
    _before_worker(_ensure_topics_patiently(settings))


def _before_worker(coroutine: Any) -> Any:
    """Run a coroutine to completion before the worker's own event loop exists."""
    result = asyncio.run(coroutine)
    # Faust's Worker picks up the current event loop; asyncio.run() left none behind.
    asyncio.set_event_loop(asyncio.new_event_loop())
    return result


async def _ensure_topics_patiently(settings: Settings) -> None:
    deadline = time.monotonic() + settings.startup_timeout_s
    while True:
        try:
            await ensure_topics(settings.kafka_bootstrap, settings.partitions)
            return
        except Exception as exc:  # the broker may still be starting (compose, k8s): retry, then say so
            if time.monotonic() >= deadline:
                raise ConfigurationError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap} within {settings.startup_timeout_s:g} s "
                    f"(SALESPULSE_KAFKA_URL): {type(exc).__name__}: {exc}"
                ) from None
            log.warning("Kafka at %s not reachable yet (%s); retrying", settings.kafka_bootstrap, type(exc).__name__)
            await asyncio.sleep(1.0)


def redis_client_for(url: str) -> aioredis.Redis:
    """A client that retries a command once a connection dropped (e.g. after a Redis restart)."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, TimeoutError],
        health_check_interval=30,
    )


def _redis_readiness(client: aioredis.Redis) -> Any:
    async def check() -> bool:
        try:
            return bool(await asyncio.wait_for(client.ping(), 2.0))
        except Exception:
            return False

    return check


def _worker_services(
    settings: Settings,
    registry: CollectorRegistry,
    with_ingest: bool,
    journal: Journal | None = None,
    seeded: SeedResult | None = None,
) -> tuple[faust.App, list[Service]]:
    """The worker's services (and ingest's with ``with_ingest``); ``seeded``: hold the outputs until caught up."""
    redis_client = redis_client_for(settings.redis_url or "")
    runtime = WorkerRuntime(settings, registry, redis_client)
    readiness = {"redis": _redis_readiness(redis_client), "worker": runtime.ready}
    # The collector must not rescan the metric state in memory: see salespulse/streams/memory.py.
    services: list[Service] = [GarbageCollection()]
    outputs: list[Service] = [runtime.flusher]
    if runtime.alert_clock is not None:
        outputs.append(runtime.alert_clock)
    if seeded is None:
        services += outputs
    else:
        catch_up = _catch_up(settings, runtime, outputs, seeded)
        services.append(catch_up)
        readiness["journal"] = catch_up.ready
    webhook = None
    crm_webhooks: list[CrmWebhook] = []
    if with_ingest:
        event_log = EventLog(settings.kafka_bootstrap, registry, settings.publish_timeout_seconds, journal)
        readiness["kafka"] = event_log.ping
        webhook = GenericWebhook(event_log, _secret(settings), registry)
        crm_webhooks = _crm_webhooks(settings, event_log, webhook, registry)
        services.insert(0, EventLogService(event_log))
    else:
        readiness["kafka"] = runtime.flusher.topics.ping
    app = build_http_app(registry, readiness, webhook, crm_webhooks)
    services.append(HttpServer(app, settings.http_host, settings.http_port))
    return runtime.app, services


def _catch_up(settings: Settings, runtime: WorkerRuntime, outputs: list[Service], seeded: SeedResult) -> CatchUp:
    """Starts the outputs once the re-seeded journal is reprocessed; alerts sent before are read back first."""
    family = runtime.lead_response

    def before_release() -> None:
        if seeded.alerts:
            family.inherited_unpublished.update(range(settings.partitions))

    return CatchUp(seeded, lambda: runtime.positions, outputs, before_release)


def _crm_webhooks(
    settings: Settings, event_log: EventLog, webhook: GenericWebhook, registry: CollectorRegistry
) -> list[CrmWebhook]:
    """The enabled CRM endpoints, mapped through the config file's ``[crm]`` section."""
    try:
        crm = load_config(settings.config).crm
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    hooks = build_crm_webhooks(settings, crm, event_log, webhook.rejected, IgnoredCounter(registry))
    for hook in hooks:
        log.info("CRM endpoint %s enabled", hook.path)
    return hooks


def _secret(settings: Settings) -> str | None:
    return settings.webhook_secret.get_secret_value() if settings.webhook_secret else None


def _execute(app: faust.App | None, services: list[Service], loglevel: str) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    if app is not None:
        worker: Worker = faust.Worker(app, *services, loglevel=loglevel, redirect_stdouts=False)
    else:
        worker = Worker(*services, loglevel=loglevel, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """``salespulse worker``: consume events, keep tables, publish metrics; serves health and /metrics."""
    _require_external(settings)
    _prepare_topics(settings)
    app, services = _worker_services(settings, CollectorRegistry(), with_ingest=False)
    return _execute(app, services, loglevel)


def run_ingest(settings: Settings, insecure: bool = False, loglevel: str = "info") -> int:
    """``salespulse ingest``: the webhook endpoints; refuses to run unsigned unless ``insecure``."""
    _require_external(settings, need_redis=False)
    if settings.webhook_secret is None and not insecure:
        raise ConfigurationError(
            "SALESPULSE_WEBHOOK_SECRET is not set: refusing to accept unsigned webhooks (pass --insecure to allow)"
        )
    _prepare_topics(settings)
    registry = CollectorRegistry()
    event_log = EventLog(settings.kafka_bootstrap, registry, settings.publish_timeout_seconds)
    webhook = GenericWebhook(event_log, _secret(settings), registry)
    crm_webhooks = _crm_webhooks(settings, event_log, webhook, registry)
    readiness = {"kafka": event_log.ping}
    app = build_http_app(registry, readiness, webhook, crm_webhooks)
    http = HttpServer(app, settings.http_host, settings.http_port)
    return _execute(None, [EventLogService(event_log), http], loglevel)


def run_all(
    settings: Settings,
    simulate_options: dict[str, Any] | None = None,
    loglevel: str = "info",
    announce: Callable[[str], None] = lambda message: None,
    ephemeral: bool = False,
) -> int:
    """``salespulse run``: embedded broker and Redis unless URLs are given, then ingest and a worker.

    Durable unless ``ephemeral``: the embedded broker is re-seeded from the journal in the data
    directory and the embedded Redis keeps an append-only file there. ``announce`` receives one line
    per embedded server (where it listens) and one saying where the data lives.
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
        if settings.kafka_url is None:
            broker = stack.enter_context(EmbeddedBroker(log_path=data_dir / "tansu.log"))
            announce(f"embedded Kafka-protocol broker (Tansu): {broker.url}")
            tansu = True if settings.tansu_compat is None else settings.tansu_compat
            settings = settings.model_copy(update={"kafka_url": broker.url, "tansu_compat": tansu})
        redis_dir = None
        if settings.redis_url is None:
            redis_dir = None if ephemeral else data_dir / "redis"
            redis_server = stack.enter_context(EmbeddedRedis(log_path=data_dir / "redis.log", data_dir=redis_dir))
            announce(f"embedded Redis: {redis_server.url}")
            settings = settings.model_copy(update={"redis_url": redis_server.url})
        announce(_where_data_lives(data_dir, ephemeral, journaled, redis_dir is not None))
        _prepare_topics(settings)
        journal: JournalWriter | None = None
        seeded: SeedResult | None = None
        if journaled:
            journal, seeded = _open_journal(settings, data_dir / "journal", announce)
            stack.callback(journal.close)
        app, services = _worker_services(
            settings, CollectorRegistry(), with_ingest=True,
            journal=journal.append if journal else None, seeded=seeded,
        )  # fmt: skip
        if simulate_options is not None:
            url = f"http://{settings.http_host}:{settings.http_port}"
            services.append(SimulatorService(url, _secret(settings), simulate_options))
        return _execute(app, services, loglevel)


def _where_data_lives(data_dir: Path, ephemeral: bool, journaled: bool, redis_kept: bool) -> str:
    if ephemeral:
        return f"ephemeral: nothing is kept after a stop (logs in {data_dir})"
    kept = [what for what, here in (("the event journal", journaled), ("Redis", redis_kept)) if here]
    if not kept:
        return f"data: in your Kafka and Redis (logs in {data_dir})"
    return f"data: {data_dir} ({' and '.join(kept)}; kept across restarts, SALESPULSE_DATA_DIR)"


def _open_journal(
    settings: Settings, directory: Path, announce: Callable[[str], None]
) -> tuple[JournalWriter, SeedResult]:
    """Trim old journal days, re-seed the fresh broker from the rest, and open it for appends."""
    if settings.journal_days:
        for path in trim_segments(directory, settings.journal_days):
            log.info("journal: deleted %s (older than SALESPULSE_JOURNAL_DAYS)", path.name)
    journal = JournalWriter(directory)  # repairs a torn last record before anything reads it
    seeded = _before_worker(reseed(settings.kafka_bootstrap, directory, settings.redis_url, settings.partitions))
    if seeded.records:
        announce(
            f"journal: {seeded.records} events and {seeded.alerts} sent alerts re-seeded in {seeded.seconds:.1f} s; "
            "the worker reprocesses them before publishing"
        )
    return journal, seeded


def _require_external(settings: Settings, need_redis: bool = True) -> None:
    if settings.kafka_url is None:
        raise ConfigurationError("SALESPULSE_KAFKA_URL is required for this role (e.g. kafka://kafka:9092)")
    if need_redis and settings.redis_url is None:
        raise ConfigurationError("SALESPULSE_REDIS_URL is required for this role (e.g. redis://redis:6379/0)")
