"""Close webhooks (``{"subscription_id", "event": {...}}``) → canonical events; see docs/crm.md.

Event ids are ``close:<event.id>``. Leads, opportunities (``value`` in cents; ``status_type`` active / won /
lost decides the outcome unless ``[crm.close.stages]`` maps the status) and call, email and meeting activities.
Times without a zone are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from salespulse.crm_config import VendorMapping
from salespulse.handlers.crm.common import (
    FieldProblem,
    Normalised,
    Unnormalisable,
    as_object,
    event,
    id_text,
    load_json,
    number,
    text,
    utc_time,
)
from salespulse.models.events import Event

#: Close call ``disposition`` → canonical outcome (anything else, or none, is ``unknown``).
CALL_OUTCOMES = {
    "answered": "connected",
    "no-answer": "no_answer",
    "vm-answer": "voicemail",
    "vm-left": "voicemail",
    "busy": "busy",
}


class _CloseEvent:
    def __init__(self, raw: Any) -> None:
        body = as_object(raw, "body")
        ev = as_object(body.get("event"), "event")
        self.event_id = "close:" + (id_text(ev.get("id"), "event.id") or "")
        self.object_type = text(ev.get("object_type"), "event.object_type", required=True) or ""
        self.action = text(ev.get("action"), "event.action", required=True) or ""
        self.at: datetime = utc_time(ev.get("date_created"), "event.date_created")
        data = ev.get("data")
        self.data: dict[str, Any] = as_object(data, "event.data") if data is not None else {}
        previous = ev.get("previous_data")
        self.previous: dict[str, Any] = as_object(previous, "event.previous_data") if previous is not None else {}
        changed = ev.get("changed_fields") or []
        if not isinstance(changed, list):
            raise FieldProblem("event.changed_fields", "expected a list")
        self.changed_fields = {f for f in changed if isinstance(f, str)}
        self.lead_id = id_text(ev.get("lead_id") or self.data.get("lead_id"), "event.lead_id", required=False)

    def changed(self, name: str) -> bool:
        return name in self.changed_fields or (name in self.previous and self.previous.get(name) != self.data.get(name))

    def field(self, name: str) -> str:
        return f"event.data.{name}"


def normalise_close(body: bytes, mapping: VendorMapping) -> Normalised:
    """Normalise one Close request (one event); raises ``Unnormalisable`` naming the field."""
    document = load_json(body)
    try:
        ev = _CloseEvent(document)
        out = Normalised()
        kind = f"{ev.object_type}.{ev.action}"[:64]
        if ev.action not in ("created", "updated"):
            out.ignored.append(kind)
            return out
        if ev.object_type == "lead":
            out.events += _lead(ev)
        elif ev.object_type == "opportunity":
            out.events += _opportunity(ev, mapping)
        elif ev.object_type == "activity.call":
            out.events += _call(ev, mapping)
        elif ev.object_type == "activity.email":
            out.events += _email(ev, mapping)
        elif ev.object_type == "activity.meeting":
            out.events += _meeting(ev, mapping)
        if not out.events:
            out.ignored.append(kind)
        return out
    except FieldProblem as problem:
        raise Unnormalisable([{"field": problem.field, "message": problem.message}]) from None


def _lead(ev: _CloseEvent) -> list[Event]:
    if ev.action != "created":
        return []
    lead_id = id_text(ev.data.get("id"), ev.field("id"))
    return [event("event", event_id=ev.event_id, type="lead.created", occurred_at=ev.at, lead_id=lead_id)]


def _stage(ev: _CloseEvent, mapping: VendorMapping, data: dict[str, Any], path: str) -> tuple[str, str, bool, bool]:
    status_id = id_text(data.get("status_id"), f"{path}.status_id") or ""
    pipeline_id = id_text(data.get("pipeline_id"), f"{path}.pipeline_id", required=False)
    if status_id in mapping.stages:
        stage = mapping.stages[status_id]
        return stage.pipeline, stage.stage, stage.closed, stage.won
    status_type = data.get("status_type")
    label = text(data.get("status_label"), f"{path}.status_label") or status_id
    return mapping.pipeline_for(pipeline_id), label[:64], status_type in ("won", "lost"), status_type == "won"


def _opportunity(ev: _CloseEvent, mapping: VendorMapping) -> list[Event]:
    data = ev.data
    deal_id = id_text(data.get("id"), ev.field("id"))
    cents = number(data.get("value"), ev.field("value"))
    amount = cents / 100 if cents is not None else None
    currency = text(data.get("value_currency"), ev.field("value_currency"))
    confidence = number(data.get("confidence"), ev.field("confidence"))
    probability = confidence / 100 if confidence is not None else None
    rep = mapping.rep_for(id_text(data.get("user_id"), ev.field("user_id"), required=False))
    pipeline, stage, closed, won = _stage(ev, mapping, data, "event.data")
    common: dict[str, Any] = {"deal_id": deal_id, "occurred_at": ev.at}
    events: list[Event] = []
    if ev.action == "created":
        events.append(event("event", event_id=ev.event_id, type="deal.created", lead_id=ev.lead_id, pipeline=pipeline,
                            stage=stage, amount=amount, currency=currency, probability=probability, rep_id=rep,
                            **common))
        if ev.lead_id:
            # In Close an opportunity always belongs to a lead: creating one converts the lead.
            events.append(event("event", event_id=ev.event_id + ":converted", type="lead.converted",
                                lead_id=ev.lead_id, deal_id=deal_id, occurred_at=ev.at))
        if closed:
            suffix = ":won" if won else ":lost"
            events.append(_closing(ev, won, suffix, pipeline, amount, currency, rep, common))
        return events
    if ev.changed("status_id"):
        if closed:
            return [_closing(ev, won, "", pipeline, amount, currency, rep, common)]
        from_stage = None
        if ev.previous.get("status_id"):
            _, from_stage, _, _ = _stage(ev, mapping, {**data, **ev.previous}, "event.previous_data")
        events.append(event("event", event_id=ev.event_id, type="deal.stage_changed", pipeline=pipeline,
                            from_stage=from_stage, to_stage=stage, amount=amount, currency=currency,
                            probability=probability, rep_id=rep, **common))
    updates: dict[str, Any] = {}
    if ev.changed("value") and amount is not None:
        updates["amount"] = amount
    if ev.changed("confidence") and probability is not None:
        updates["probability"] = probability
    if ev.changed("user_id") and rep is not None:
        updates["rep_id"] = rep
    if updates:
        suffix = ":updated" if events else ""
        events.append(event("event", event_id=ev.event_id + suffix, type="deal.updated", **common, **updates))
    return events


def _closing(ev: _CloseEvent, won: bool, suffix: str, pipeline: str, amount: float | None, currency: str | None,
             rep: str | None, common: dict[str, Any]) -> Event:
    if won:
        return event("event", event_id=ev.event_id + suffix, type="deal.won", pipeline=pipeline, amount=amount,
                     currency=currency, rep_id=rep, **common)
    return event("event", event_id=ev.event_id + suffix, type="deal.lost", pipeline=pipeline, rep_id=rep, **common)


def _activity_common(ev: _CloseEvent, mapping: VendorMapping) -> dict[str, Any] | None:
    rep = mapping.rep_for(id_text(ev.data.get("user_id"), ev.field("user_id"), required=False))
    if ev.lead_id is None or rep is None:
        return None
    return {"lead_id": ev.lead_id, "rep_id": rep, "occurred_at": ev.at}


def _call(ev: _CloseEvent, mapping: VendorMapping) -> list[Event]:
    common = _activity_common(ev, mapping)
    if common is None or ev.action != "created":
        return []
    disposition = ev.data.get("disposition")
    outcome = CALL_OUTCOMES.get(disposition, "unknown") if isinstance(disposition, str) else "unknown"
    duration = number(ev.data.get("duration"), ev.field("duration"))
    return [event("event", event_id=ev.event_id, type="call.logged", outcome=outcome, duration_s=duration, **common)]


def _email(ev: _CloseEvent, mapping: VendorMapping) -> list[Event]:
    """An outgoing email counts when it is sent: created as sent, or updated to sent (drafts, outbox)."""
    common = _activity_common(ev, mapping)
    if common is None or ev.data.get("direction") not in ("outgoing", None) or ev.data.get("status") != "sent":
        return []
    if ev.action == "updated" and not ev.changed("status"):
        return []
    email_id = id_text(ev.data.get("id"), ev.field("id"))
    return [event("event", event_id=ev.event_id, type="email.sent", email_id=email_id, **common)]


def _meeting(ev: _CloseEvent, mapping: VendorMapping) -> list[Event]:
    common = _activity_common(ev, mapping)
    if common is None:
        return []
    meeting_id = id_text(ev.data.get("id"), ev.field("id"))
    if ev.action == "created":
        return [event("event", event_id=ev.event_id, type="meeting.booked", meeting_id=meeting_id, **common)]
    if ev.changed("status") and ev.data.get("status") == "completed":
        return [event("event", event_id=ev.event_id, type="meeting.held", meeting_id=meeting_id, **common)]
    return []
