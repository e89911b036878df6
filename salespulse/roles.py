"""The process roles: ``worker``, ``ingest``, ``board`` and ``run`` (everything on one machine, one HTTP port)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import faust
import redis.asyncio as aioredis
from mode import Service, Worker
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from salespulse.config import ConfigError, load_config
from salespulse.handlers.crm import CrmWebhook, IgnoredCounter, build_crm_webhooks
from salespulse.handlers.event_log import EventLog
from salespulse.handlers.http import HttpServer, build_http_app
from salespulse.handlers.webhooks import GenericWebhook
from salespulse.settings import Settings
from salespulse.streams.memory import GarbageCollection
from salespulse.streams.topics import ensure_topics
from salespulse.streams.worker import WorkerRuntime

if TYPE_CHECKING:
    from salespulse.board.live import BoardHub

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
    asyncio.run(_ensure_topics_patiently(settings))
    # Faust's Worker picks up the current event loop; asyncio.run() left none behind.
    asyncio.set_event_loop(asyncio.new_event_loop())


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
    settings: Settings, registry: CollectorRegistry, with_ingest: bool, with_board: bool = False
) -> tuple[faust.App, list[Service]]:
    redis_client = redis_client_for(settings.redis_url or "")
    runtime = WorkerRuntime(settings, registry, redis_client)
    readiness = {"redis": _redis_readiness(redis_client), "worker": runtime.ready}
    # The collector must not rescan the metric state in memory: see salespulse/streams/memory.py.
    services: list[Service] = [GarbageCollection(), runtime.flusher]
    if runtime.alert_clock is not None:
        services.append(runtime.alert_clock)
    if runtime.awaiting_publisher is not None:
        services.append(runtime.awaiting_publisher)
    webhook = None
    crm_webhooks: list[CrmWebhook] = []
    if with_ingest:
        event_log = EventLog(settings.kafka_bootstrap, registry, settings.publish_timeout_seconds)
        readiness["kafka"] = event_log.ping
        webhook = GenericWebhook(event_log, _secret(settings), registry)
        crm_webhooks = _crm_webhooks(settings, event_log, webhook, registry)
        services.insert(0, EventLogService(event_log))
    else:
        readiness["kafka"] = runtime.flusher.topics.ping
    app = build_http_app(registry, readiness, webhook, crm_webhooks)
    if with_board:
        from salespulse.board.routes import add_board_routes

        hub = _board_hub(settings, redis_client)
        add_board_routes(app, hub)
        services.append(hub)
    services.append(HttpServer(app, settings.http_host, settings.http_port))
    return runtime.app, services


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


def run_board(settings: Settings, loglevel: str = "info") -> int:
    """``salespulse board``: the live board over a production Redis (reads only); serves /, /healthz, /readyz."""
    from salespulse.board.routes import add_board_routes

    if settings.redis_url is None:
        raise ConfigurationError("SALESPULSE_REDIS_URL is required for this role (e.g. redis://redis:6379/0)")
    redis_client = redis_client_for(settings.redis_url)
    hub = _board_hub(settings, redis_client)
    app = build_http_app(CollectorRegistry(), {"redis": _redis_readiness(redis_client)})
    add_board_routes(app, hub)
    return _execute(None, [hub, HttpServer(app, settings.http_host, settings.http_port)], loglevel)


def run_all(
    settings: Settings,
    simulate_options: dict[str, Any] | None = None,
    loglevel: str = "info",
    announce: Callable[[str], None] = lambda message: None,
) -> int:
    """``salespulse run``: embedded broker and Redis unless URLs are given, then ingest and a worker.

    ``announce`` receives one line per embedded server (where it listens) before the worker starts.
    """
    from salespulse.embedded.broker import EmbeddedBroker
    from salespulse.embedded.redis_server import EmbeddedRedis

    if settings.webhook_secret is None and not is_loopback(settings.http_host):
        raise ConfigurationError(
            f"refusing to listen on {settings.http_host} without SALESPULSE_WEBHOOK_SECRET: "
            "set a secret, or keep SALESPULSE_HTTP_HOST on loopback"
        )
    with ExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.kafka_url is None:
            broker = stack.enter_context(EmbeddedBroker(log_path=settings.data_dir / "tansu.log"))
            announce(f"embedded Kafka-protocol broker (Tansu): {broker.url}")
            tansu = True if settings.tansu_compat is None else settings.tansu_compat
            settings = settings.model_copy(update={"kafka_url": broker.url, "tansu_compat": tansu})
        if settings.redis_url is None:
            redis_server = stack.enter_context(EmbeddedRedis(log_path=settings.data_dir / "redis.log"))
            announce(f"embedded Redis: {redis_server.url}")
            settings = settings.model_copy(update={"redis_url": redis_server.url})
        _prepare_topics(settings)
        app, services = _worker_services(settings, CollectorRegistry(), with_ingest=True, with_board=True)
        if simulate_options is not None:
            url = f"http://{settings.http_host}:{settings.http_port}"
            services.append(SimulatorService(url, _secret(settings), simulate_options))
        return _execute(app, services, loglevel)


def _require_external(settings: Settings, need_redis: bool = True) -> None:
    if settings.kafka_url is None:
        raise ConfigurationError("SALESPULSE_KAFKA_URL is required for this role (e.g. kafka://kafka:9092)")
    if need_redis and settings.redis_url is None:
        raise ConfigurationError("SALESPULSE_REDIS_URL is required for this role (e.g. redis://redis:6379/0)")
