"""An in-process server with every CRM endpoint enabled, an in-memory event log and request signers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from prometheus_client import CollectorRegistry, Counter

from salespulse.config import Config
from salespulse.crm_config import CrmSection, HubSpotMapping, StageMapping
from salespulse.handlers.crm import IgnoredCounter, build_crm_webhooks
from salespulse.handlers.crm.signatures import close_signature, hubspot_v3_signature
from salespulse.handlers.event_log import EventLogUnavailable
from salespulse.handlers.http import build_http_app
from salespulse.handlers.signatures import sign
from salespulse.models.events import Event
from salespulse.settings import Settings

HUBSPOT_SECRET = "hs-client-secret"
PIPEDRIVE_AUTH = "salespulse:pd-pass"
CLOSE_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
ORG_ID = "00D000000000062EAA"
GENERIC_SECRET = "generic-secret"


class MemorySink:
    """The event log stand-in: records each publish call (one per request) and each dead letter."""

    def __init__(self) -> None:
        self.published: list[list[Event]] = []
        self.dead: list[bytes] = []
        self.deferred: list[tuple[str, bytes]] = []
        self.failing = False

    async def publish(self, events: Sequence[Event]) -> None:
        if self.failing:
            raise EventLogUnavailable("broker down")
        self.published.append(list(events))

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        if self.failing:
            raise EventLogUnavailable("broker down")
        self.dead.append(value)

    async def defer(self, endpoint: str, body: bytes) -> None:
        if self.failing:
            raise EventLogUnavailable("broker down")
        self.deferred.append((endpoint, body))


def crm_app(sink: MemorySink, crm: CrmSection | None = None, **settings_extra: object):  # noqa: ANN201
    settings = Settings(
        hubspot_client_secret=HUBSPOT_SECRET, pipedrive_basic_auth=PIPEDRIVE_AUTH, close_signature_key=CLOSE_KEY,
        salesforce_org_id=ORG_ID, webhook_secret=GENERIC_SECRET, **settings_extra,
    )
    registry = CollectorRegistry()
    rejected = Counter("salespulse_events_rejected", "x", ["endpoint", "reason"], registry=registry)
    crm = crm or Config().crm.model_copy(update={"hubspot": HubSpotMapping(
        stages={"s1": StageMapping(pipeline="p", stage="one")})})
    hooks = build_crm_webhooks(settings, crm, sink, rejected, IgnoredCounter(registry))
    return build_http_app(registry, {}, None, hooks), registry


@contextmanager
def serving(app: web.Application) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient]]:
    """``app`` served on a loop of its own, for hypothesis tests (synchronous, driving the loop per example)."""
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.close())
        loop.close()


def hubspot_headers(url: str, body: bytes, at_ms: int | None = None) -> dict[str, str]:
    ts = str(int(time.time() * 1000) if at_ms is None else at_ms)
    return {"X-HubSpot-Signature-v3": hubspot_v3_signature(HUBSPOT_SECRET, "POST", url, body, ts),
            "X-HubSpot-Request-Timestamp": ts, "Content-Type": "application/json"}


def pipedrive_headers() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(PIPEDRIVE_AUTH.encode()).decode()}


def close_headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"close-sig-timestamp": ts, "close-sig-hash": close_signature(CLOSE_KEY, ts, body)}


def generic_headers(body: bytes) -> dict[str, str]:
    return {"X-Salespulse-Signature": sign(GENERIC_SECRET, body)}
