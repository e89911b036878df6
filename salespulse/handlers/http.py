"""The HTTP server of every role: webhooks (ingest), ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from salespulse.handlers.connection_guard import ConnectionGuard, body_deadline
from salespulse.handlers.crm.endpoint import CrmWebhook
from salespulse.handlers.webhooks import GenericWebhook, json_response
from salespulse.settings import MAX_BODY_BYTES

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


class CollectedMetrics:
    """Metric families already collected, offered to ``generate_latest`` like a registry."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def build_http_app(
    registry: CollectorRegistry,
    readiness: dict[str, ReadinessCheck],
    webhook: GenericWebhook | None = None,
    crm_webhooks: Sequence[CrmWebhook] = (),
    body_timeout_s: float = 30.0,
) -> web.Application:
    """The aiohttp application; ``webhook`` is None in a worker-only process; CRM routes only when enabled.
    A request body must arrive within ``body_timeout_s`` (else 408)."""
    # A little over the contract's limit, so the handler answers 413 itself with a JSON body.
    app = web.Application(
        client_max_size=MAX_BODY_BYTES + 1, middlewares=[body_deadline(body_timeout_s, MAX_BODY_BYTES)]
    )

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok"}, 200)

    async def readyz(_: web.Request) -> web.Response:
        names = list(readiness)
        results = await asyncio.gather(*(readiness[name]() for name in names), return_exceptions=True)
        checks = {name: result is True for name, result in zip(names, results)}
        return json_response({"ready": all(checks.values()), "checks": checks}, 200 if all(checks.values()) else 503)

    async def metrics(_: web.Request) -> web.Response:
        # Collect in the loop (collectors read worker state that only the loop mutates), then format the
        # snapshot in a thread: formatting is most of a scrape's cost, and the loop keeps consuming meanwhile.
        snapshot = CollectedMetrics(list(registry.collect()))
        payload = await asyncio.to_thread(generate_latest, snapshot)  # type: ignore[arg-type]
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if webhook is not None:
        app.router.add_post("/webhooks/events", webhook.handle)
    for crm in crm_webhooks:
        app.router.add_post(crm.path, crm.handle)
    return app


class HttpServer(Service):
    """Serves an aiohttp application on host:port for as long as the service runs, behind a ``ConnectionGuard``
    (at most ``max_connections``, request headers within ``header_timeout_s``)."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        header_timeout_s: float = 10.0,
        max_connections: int = 512,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.web_app = app
        self.host = host
        self.port = port
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.guard: ConnectionGuard | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.web_app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        self.guard = ConnectionGuard(self._runner.server, self.header_timeout_s, self.max_connections)
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self.host, self.port, reuse_address=True
        )
        log.info("HTTP listening on http://%s:%s", self.host, self.port)

    async def on_stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
