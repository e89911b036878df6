"""``POST /webhooks/events``: verify, parse and validate a canonical event or an array of them, then publish.

All or nothing per request: 202 ``{"accepted": n}`` (n distinct event ids: a repeated id is published once); 400 naming every bad field (nothing published);
401 bad or missing signature; 413 body over 1 MiB; 503 when the event log cannot be written.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from salespulse.handlers.event_log import EventLog, EventLogRefused, EventLogUnavailable
from salespulse.handlers.signatures import SIGNATURE_HEADER, SignatureError, verify
from salespulse.models.errors import field_errors
from salespulse.models.events import INTERNAL_EVENT_TYPES, MAX_FUTURE_SKEW, Event, EventAdapter
from salespulse.settings import MAX_BODY_BYTES, MAX_EVENTS_PER_REQUEST, SIGNATURE_TOLERANCE_SECONDS

log = logging.getLogger(__name__)


def json_response(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def indexed_field_errors(index: int, exc: ValidationError) -> list[dict[str, Any]]:
    """The errors of the event at ``index`` of the request, as the 400 body lists them."""
    return [{"index": index, "field": e.field, "message": e.message, "type": e.type} for e in field_errors(exc)]


class RejectedRequest(Exception):
    """A request answered with an error status; ``reason`` is its low-cardinality metric label."""

    def __init__(self, status: int, reason: str, body: dict[str, Any]) -> None:
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body


def parse_events(body: bytes) -> list[Event]:
    """Validate a body holding one event object or an array of up to 500; raises ``RejectedRequest``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RejectedRequest(400, "invalid_json", {"error": f"body is not JSON: {exc}"}) from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise RejectedRequest(400, "empty", {"error": "no events in the body"})
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise RejectedRequest(
            400, "too_many_events", {"error": f"{len(items)} events; at most {MAX_EVENTS_PER_REQUEST} per request"}
        )
    events: list[Event] = []
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    latest = datetime.now(timezone.utc) + MAX_FUTURE_SKEW
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append({"index": index, "field": "", "message": "an event must be a JSON object", "type": "type"})
            continue
        try:
            event = EventAdapter.validate_python(item)
        except ValidationError as exc:
            errors += indexed_field_errors(index, exc)
            continue
        if event.type in INTERNAL_EVENT_TYPES:
            errors.append(
                {
                    "index": index,
                    "field": "type",
                    "message": f"{event.type!r} is internal: only the salespulse worker writes it",
                    "type": "internal_type",
                }
            )
            continue
        if event.occurred_at > latest:
            errors.append(
                {
                    "index": index,
                    "field": "occurred_at",
                    "message": f"more than {MAX_FUTURE_SKEW} in the future (sender clock skew?)",
                    "type": "future",
                }
            )
            continue
        if event.event_id in seen:
            continue  # a redelivery within the request: counted once, like one across requests
        seen.add(event.event_id)
        events.append(event)
    if errors:
        raise RejectedRequest(400, "invalid_event", {"error": "invalid events; nothing was accepted", "errors": errors})
    return events


class GenericWebhook:
    """The handler of the generic endpoint, with its dependencies passed in explicitly."""

    endpoint = "events"

    def __init__(self, event_log: EventLog, secret: str | None, registry: CollectorRegistry) -> None:
        self.event_log = event_log
        self.secret = secret
        self.rejected = Counter(
            "salespulse_events_rejected",
            "Webhook requests rejected, by endpoint and reason.",
            ["endpoint", "reason"],
            registry=registry,
        )

    async def handle(self, request: web.Request) -> web.Response:
        try:
            events = await self._accept(request)
            await self.event_log.publish(events)
        except RejectedRequest as exc:
            self.rejected.labels(self.endpoint, exc.reason).inc()
            return json_response(exc.body, exc.status)
        except EventLogRefused as exc:  # permanent: a retry would fail the same way
            self.rejected.labels(self.endpoint, "too_large").inc()
            log.warning("event log refused the request: %s", exc)
            return json_response({"error": str(exc)}, 413)
        except EventLogUnavailable as exc:
            self.rejected.labels(self.endpoint, "unavailable").inc()
            log.warning("event log unavailable: %s", exc)
            return json_response({"error": "event log unavailable, retry later"}, 503)
        return json_response({"accepted": len(events)}, 202)

    async def _accept(self, request: web.Request) -> list[Event]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise RejectedRequest(413, "too_large", {"error": f"body over {MAX_BODY_BYTES} bytes"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RejectedRequest(413, "too_large", {"error": f"body over {MAX_BODY_BYTES} bytes"}) from None
        if self.secret is not None:
            try:
                verify(self.secret, body, request.headers.get(SIGNATURE_HEADER), SIGNATURE_TOLERANCE_SECONDS)
            except SignatureError as exc:
                raise RejectedRequest(401, "bad_signature", {"error": str(exc)}) from None
        return parse_events(body)
