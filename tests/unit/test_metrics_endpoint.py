"""``GET /metrics``: collected in the event loop, formatted off it, the same text as ``generate_latest``."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily

from salespulse.handlers.http import build_http_app


class RepCollector:
    """A custom collector, as the worker's business families are (label values needing escapes included)."""

    def __init__(self) -> None:
        self.collections = 0

    def collect(self) -> list[CounterMetricFamily]:
        self.collections += 1
        metric = CounterMetricFamily("salespulse_test_things", "Things.", labels=["rep"])
        metric.add_metric(['a "quoted"\nrep'], 7)
        return [metric]


async def test_metrics_endpoint_serves_the_registry_as_generate_latest_formats_it() -> None:
    registry = CollectorRegistry()
    Counter("salespulse_test_requests", "Requests.", ["outcome"], registry=registry).labels("ok").inc(3)
    collector = RepCollector()
    registry.register(collector)
    async with TestClient(TestServer(build_http_app(registry, {}))) as client:
        response = await client.get("/metrics")
        body = await response.read()
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert collector.collections == 1
    assert body == generate_latest(registry)
    assert b'salespulse_test_things_total{rep="a \\"quoted\\"\\nrep"} 7.0' in body
