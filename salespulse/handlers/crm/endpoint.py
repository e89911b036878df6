"""One CRM webhook endpoint: size limit, authentication of the raw body, normalisation, then all-or-nothing publish.

Answers: 200 (the CRM's acknowledgement: JSON ``{"accepted", "ignored", "dead_lettered"}``, or the SOAP Ack
for Salesforce); 401 bad authentication, checked before anything else; 413 body over 1 MiB or records Kafka
refuses for good; 503 only when the event log cannot be written for now (the CRM retries; the event-id dedup
makes that safe). An authenticated payload that cannot be normalised is written, bounded, with the reasons
naming each vendor field, to ``salespulse.events.dlq`` and acknowledged: a CRM would resend it unchanged
forever (Pipedrive bans an endpoint after 10 failures). Nothing else from that request is published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from salespulse.handlers.crm.common import Normalised, Unnormalisable
from salespulse.handlers.event_log import EventLogRefused, EventLogUnavailable
from salespulse.handlers.signatures import SignatureError
from salespulse.handlers.webhooks import json_response
from salespulse.models.events import Event
from salespulse.settings import MAX_BODY_BYTES
from salespulse.topics import bounded_text, dead_letter_payload

log = logging.getLogger(__name__)

#: Distinct ``kind`` label values kept per endpoint; later new kinds are counted as ``other``.
MAX_IGNORED_KINDS = 100
#: Field errors a dead-letter record lists (the rest are counted): a record stays far below a message's limit.
MAX_DEAD_LETTER_ERRORS = 50

Authenticate = Callable[[web.Request, bytes], None]
Normalise = Callable[[bytes], Normalised]
Acknowledge = Callable[[Normalised | None], web.Response]


class EventSink(Protocol):
    """What an endpoint needs of the event log (``EventLog``, or an in-memory stand-in in tests)."""

    async def publish(self, events: Sequence[Event]) -> None: ...

    async def dead_letter(self, key: bytes, value: bytes) -> None: ...

    async def defer(self, endpoint: str, body: bytes) -> None: ...


class IgnoredCounter:
    """``salespulse_webhook_events_ignored_total{endpoint, kind}``: vendor events accepted but not turned into events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "salespulse_webhook_events_ignored",
            "CRM events accepted (2xx) but not normalised: unknown kinds, fields salespulse does not use.",
            ["endpoint", "kind"],
            registry=registry,
        )
        self._kinds: dict[str, set[str]] = {}

    def count(self, endpoint: str, kinds: Sequence[str]) -> None:
        seen = self._kinds.setdefault(endpoint, set())
        for kind in kinds:
            if kind not in seen and len(seen) >= MAX_IGNORED_KINDS:
                kind = "other"
            seen.add(kind)
            self.counter.labels(endpoint, kind).inc()


def dead_letter_record(endpoint: str, errors: list[dict[str, str]], body: bytes, now: float | None = None) -> bytes:
    """The ``salespulse.events.dlq`` value of a CRM request that could not be normalised: bounded (the payload
    cut to ``DEAD_LETTER_RAW_BYTES``, at most ``MAX_DEAD_LETTER_ERRORS`` errors), so it always fits a message."""
    kept = [{"field": bounded_text(e["field"], 200), "message": bounded_text(e["message"], 500)}
            for e in errors[:MAX_DEAD_LETTER_ERRORS]]
    record: dict[str, Any] = {
        "reason": bounded_text(f"{endpoint}: cannot normalise: " + "; ".join(f"{e['field']}: {e['message']}" for e in kept)),
        "endpoint": endpoint,
        "errors": kept,
        **dead_letter_payload(body),
        "failed_at": time.time() if now is None else now,
    }
    if len(errors) > len(kept):
        record["errors_omitted"] = len(errors) - len(kept)
    return orjson.dumps(record)


def json_ack(normalised: Normalised | None) -> web.Response:
    if normalised is None:
        return json_response({"accepted": 0, "ignored": 0, "dead_lettered": True}, 200)
    if normalised.deferred:
        return json_response({"accepted": normalised.deferred, "ignored": 0, "deferred": True}, 200)
    return json_response({"accepted": len(normalised.events), "ignored": len(normalised.ignored)}, 200)


class CrmWebhook:
    """``POST <path>`` for one CRM: its own authentication and normaliser around the shared event log."""

    def __init__(
        self,
        endpoint: str,
        path: str,
        authenticate: Authenticate,
        normalise: Normalise,
        sink: EventSink,
        rejected: Counter,
        ignored: IgnoredCounter,
        acknowledge: Acknowledge = json_ack,
        unauthorized: tuple[type[Exception], ...] = (),
        authenticated: bool = True,
    ) -> None:
        self.endpoint, self.path = endpoint, path
        self.authenticate, self.normalise, self.acknowledge = authenticate, normalise, acknowledge
        self.sink, self.rejected, self.ignored = sink, rejected, ignored
        #: Exceptions of the normaliser that mean "not for us" (Salesforce's organization id): 401.
        self.unauthorized = unauthorized
        #: False when the endpoint has no credential to check (no secret configured): then nothing from it is
        #: dead-lettered (anyone could fill the DLQ), a payload that cannot be normalised is answered 400.
        self.authenticated = authenticated

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return self._reject(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        try:
            self.authenticate(request, body)
        except SignatureError as exc:
            return self._reject(401, "bad_signature", str(exc))
        try:
            normalised: Normalised | None = self._normalise(body)
        except self.unauthorized as exc:  # type: ignore[misc]
            return self._reject(401, "bad_signature", str(exc))
        except Unnormalisable as exc:
            if not self.authenticated:
                return self._reject(400, "invalid_payload", exc.errors[:MAX_DEAD_LETTER_ERRORS])
            normalised = None
            errors = exc.errors
        try:
            if normalised is None:
                await self.sink.dead_letter(self.endpoint.encode(), dead_letter_record(self.endpoint, errors, body))
                self.rejected.labels(self.endpoint, "dead_letter").inc()
                log.warning("%s: payload sent to the DLQ: %s", self.endpoint, "; ".join(e["field"] for e in errors))
            elif normalised.deferred:
                # Durable before the answer; the enricher (salespulse/handlers/crm/enricher.py) does the rest.
                await self.sink.defer(self.endpoint, body)
            elif normalised.events:
                await self.sink.publish(normalised.events)
        except EventLogRefused as exc:  # permanent: a retry would fail the same way
            log.warning("event log refused the request: %s", exc)
            return self._reject(413, "too_large", str(exc))
        except EventLogUnavailable as exc:
            log.warning("event log unavailable: %s", exc)
            return self._reject(503, "unavailable", "event log unavailable, retry later")
        if normalised is not None and normalised.ignored:
            self.ignored.count(self.endpoint, normalised.ignored)
        return self.acknowledge(normalised)

    def _normalise(self, body: bytes) -> Normalised:
        try:
            return self.normalise(body)
        except (Unnormalisable, *self.unauthorized):
            raise
        except Exception as exc:  # a normaliser bug must not become a 500 and a retry storm: keep the body
            log.exception("%s: normaliser failed", self.endpoint)
            raise Unnormalisable([{"field": "", "message": f"normaliser error: {type(exc).__name__}"}]) from None

    def _reject(self, status: int, reason: str, message: str | list[dict[str, str]]) -> web.Response:
        self.rejected.labels(self.endpoint, reason).inc()
        body: dict[str, Any] = (
            {"error": message} if isinstance(message, str) else {"error": "cannot normalise", "errors": message}
        )
        return json_response(body, status)
