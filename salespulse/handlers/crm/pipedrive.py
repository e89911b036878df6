"""Pipedrive webhooks, v1 (``meta``/``current``/``previous``/``event``) and v2 (``meta.action``/``entity``,
``data``, ``previous`` with only the changed fields) → canonical events; see docs/crm.md.

A salespulse lead is a Pipedrive *person*. Event ids: ``pipedrive:<meta.id>`` in v2 (unique per change);
v1 has no event id, so ``pipedrive:v1:<object>:<id>:<action>:<meta.timestamp_micro>`` (stable across retries).
Deal ``status`` decides won/lost; stages map through ``[crm.pipedrive]``. Times without a zone are UTC.
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
    epoch_s,
    event,
    id_text,
    load_json,
    number,
    text,
    utc_time,
)
from salespulse.models.events import Event

_V1_ACTIONS = {"added": "create", "updated": "change", "deleted": "delete", "merged": "merge"}
_MEETING_TYPES = {"meeting"}


class _Change:
    """One Pipedrive event in v2 terms: action, entity, current data and the previous values of changed fields."""

    def __init__(self, body: dict[str, Any]) -> None:
        meta = as_object(body.get("meta"), "meta")
        self.v2 = "data" in body or str(meta.get("version", "")).startswith("2")
        if self.v2:
            self.action = text(meta.get("action"), "meta.action", required=True) or ""
            self.entity = text(meta.get("entity"), "meta.entity", required=True) or ""
            self.event_id = "pipedrive:" + (id_text(meta.get("id"), "meta.id") or "")
            self.data_path, self.data = "data", body.get("data")
            self.previous = body.get("previous")
            stamp = meta.get("timestamp")
            self.sent_at = utc_time(stamp, "meta.timestamp") if isinstance(stamp, str) else None
        else:
            action = text(meta.get("action"), "meta.action", required=True) or ""
            self.action = _V1_ACTIONS.get(action, action)
            self.entity = text(meta.get("object"), "meta.object", required=True) or ""
            object_id = id_text(meta.get("id"), "meta.id") or ""
            stamp = meta.get("timestamp_micro", meta.get("timestamp"))
            stamp_text = id_text(stamp, "meta.timestamp_micro") or ""
            self.event_id = f"pipedrive:v1:{self.entity}:{object_id}:{action}:{stamp_text}"
            self.data_path, self.data = "current", body.get("current")
            self.previous = body.get("previous")
            seconds = meta.get("timestamp")
            self.sent_at = epoch_s(seconds, "meta.timestamp") if isinstance(seconds, (int, float)) else None
        if self.data is not None:
            self.data = as_object(self.data, self.data_path)
        if self.previous is not None:
            self.previous = as_object(self.previous, "previous")

    def changed(self, name: str) -> bool:
        """True if the field changed: v2's ``previous`` holds only changed fields; v1's holds the whole object."""
        if not self.previous or name not in self.previous or self.data is None:
            return False
        return self.previous.get(name) != self.data.get(name)

    def field(self, name: str) -> str:
        return f"{self.data_path}.{name}"

    def time(self, *names: str) -> datetime:
        """The first of the data's time fields that is set, else when Pipedrive sent the event."""
        assert self.data is not None
        for name in names:
            value = self.data.get(name)
            if value:
                return utc_time(value, self.field(name))
        if self.sent_at is None:
            raise FieldProblem(self.field(names[0]), "no time in the event (nor meta.timestamp)")
        return self.sent_at


def normalise_pipedrive(body: bytes, mapping: VendorMapping) -> Normalised:
    """Normalise one Pipedrive request (one event per request); raises ``Unnormalisable`` naming the field."""
    document = load_json(body)
    try:
        change = _Change(as_object(document, "body"))
        out = Normalised()
        kind = f"{change.entity}.{change.action}"[:64]
        if change.data is None or change.action not in ("create", "change"):
            out.ignored.append(kind)
        elif change.entity == "deal":
            out.events += _deal(change, mapping) or []
        elif change.entity == "person":
            out.events += _person(change, mapping)
        elif change.entity == "activity":
            out.events += _activity(change, mapping)
        if not out.events and not out.ignored:
            out.ignored.append(kind)
        return out
    except FieldProblem as problem:
        raise Unnormalisable([{"field": problem.field, "message": problem.message}]) from None


def _owner(change: _Change, *names: str) -> str | None:
    assert change.data is not None
    for name in names:
        value = change.data.get(name)
        if isinstance(value, dict):  # v1 sometimes expands users: {"id": 1, "name": ...}
            value = value.get("id")
        if value not in (None, ""):
            return id_text(value, change.field(name))
    return None


def _stage(change: _Change, mapping: VendorMapping, data: dict[str, Any], path: str) -> tuple[str, str, float | None]:
    stage_id = id_text(data.get("stage_id"), f"{path}.stage_id") or ""
    pipeline_id = id_text(data.get("pipeline_id"), f"{path}.pipeline_id", required=False)
    stage = mapping.stage_for(stage_id, pipeline_id)
    return stage.pipeline, stage.stage, stage.probability


def _deal(change: _Change, mapping: VendorMapping) -> list[Event]:
    data = change.data
    assert data is not None
    deal_id = id_text(data.get("id"), change.field("id")) or ""
    status = data.get("status")
    amount = number(data.get("value"), change.field("value"))
    currency = text(data.get("currency"), change.field("currency"))
    rep = mapping.rep_for(_owner(change, "owner_id", "user_id"))
    common: dict[str, Any] = {"deal_id": deal_id}
    events: list[Event] = []
    if change.action == "create":
        pipeline, stage, probability = _stage(change, mapping, data, change.data_path)
        raw_probability = number(data.get("probability"), change.field("probability"))
        events.append(event(change.data_path, event_id=change.event_id, type="deal.created",
                            occurred_at=change.time("add_time"), pipeline=pipeline, stage=stage, amount=amount,
                            currency=currency, rep_id=rep, **common,
                            probability=raw_probability / 100 if raw_probability is not None else probability))
        if status in ("won", "lost"):
            events.append(_closed(change, mapping, status, ":" + status, amount, currency))
        return events
    if change.changed("status") and status in ("won", "lost"):
        return [_closed(change, mapping, status, "", amount, currency)]
    if change.changed("stage_id") and status in (None, "open"):
        pipeline, stage, probability = _stage(change, mapping, data, change.data_path)
        assert change.previous is not None
        from_stage = None
        if change.previous.get("stage_id") not in (None, ""):
            _, from_stage, _ = _stage(change, mapping, {**data, **change.previous}, "previous")
        events.append(event(change.data_path, event_id=change.event_id, type="deal.stage_changed",
                            occurred_at=change.time("stage_change_time", "update_time"), pipeline=pipeline,
                            from_stage=from_stage, to_stage=stage, amount=amount, currency=currency,
                            probability=probability, rep_id=rep, **common))
    updates: dict[str, Any] = {}
    if change.changed("value") and amount is not None:
        updates["amount"] = amount
    if change.changed("probability"):
        raw_probability = number(data.get("probability"), change.field("probability"))
        if raw_probability is not None:
            updates["probability"] = raw_probability / 100
    if change.changed("owner_id") or change.changed("user_id"):
        updates["rep_id"] = rep
    if updates:
        suffix = ":updated" if events else ""
        events.append(event(change.data_path, event_id=change.event_id + suffix, type="deal.updated",
                            occurred_at=change.time("update_time"), **common, **updates))
    return events


def _closed(change: _Change, mapping: VendorMapping, status: str, suffix: str, amount: float | None,
            currency: str | None) -> Event:
    data = change.data
    assert data is not None
    deal_id = id_text(data.get("id"), change.field("id"))
    pipeline_id = id_text(data.get("pipeline_id"), change.field("pipeline_id"), required=False)
    pipeline = mapping.pipeline_for(pipeline_id)
    rep = mapping.rep_for(_owner(change, "owner_id", "user_id"))
    if status == "won":
        return event(change.data_path, event_id=change.event_id + suffix, type="deal.won",
                     occurred_at=change.time("won_time", "close_time", "update_time"), deal_id=deal_id,
                     pipeline=pipeline, amount=amount, currency=currency, rep_id=rep)
    reason = text(data.get("lost_reason"), change.field("lost_reason"))
    return event(change.data_path, event_id=change.event_id + suffix, type="deal.lost",
                 occurred_at=change.time("lost_time", "close_time", "update_time"), deal_id=deal_id,
                 pipeline=pipeline, reason=reason[:256] if reason else None, rep_id=rep)


def _person(change: _Change, mapping: VendorMapping) -> list[Event]:
    data = change.data
    assert data is not None
    lead_id = id_text(data.get("id"), change.field("id"))
    rep = mapping.rep_for(_owner(change, "owner_id"))
    if change.action == "create":
        return [event(change.data_path, event_id=change.event_id, type="lead.created",
                      occurred_at=change.time("add_time"), lead_id=lead_id, rep_id=rep)]
    if change.changed("owner_id") and rep is not None:
        return [event(change.data_path, event_id=change.event_id, type="lead.assigned",
                      occurred_at=change.time("update_time"), lead_id=lead_id, rep_id=rep)]
    return []


def _duration_s(value: Any, path: str) -> float | None:
    """Pipedrive durations are ``"HH:MM"`` (or ``"HH:MM:SS"``); a number is taken as seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        parts = value.split(":")
        if 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
            hours, minutes, seconds = (int(p) for p in (parts + ["0"])[:3])
            return float(hours * 3600 + minutes * 60 + seconds)
    raise FieldProblem(path, "expected a duration HH:MM")


def _activity(change: _Change, mapping: VendorMapping) -> list[Event]:
    """Calls, emails and other tasks count once done; a meeting is booked when added and held when done."""
    data = change.data
    assert data is not None
    kind = text(data.get("type"), change.field("type")) or "task"
    done = data.get("done") is True or data.get("done") == 1
    became_done = done and (change.action == "create" or change.changed("done"))
    raw_person = data.get("person_id")
    if isinstance(raw_person, dict):  # v1 may expand it: {"value": 5, "name": ...}
        person = id_text(raw_person.get("value"), change.field("person_id.value"), required=False)
    else:
        person = id_text(raw_person, change.field("person_id"), required=False)
    rep = mapping.rep_for(_owner(change, "owner_id", "user_id", "assigned_to_user_id"))
    if person is None or rep is None:
        return []  # counted as ignored by the caller: an activity on no person (or by no one) has no lead
    activity_id = id_text(data.get("id"), change.field("id"))
    common = {"lead_id": person, "rep_id": rep}
    if kind in _MEETING_TYPES:
        if change.action == "create":
            return [event(change.data_path, event_id=change.event_id, type="meeting.booked",
                          occurred_at=change.time("add_time"), meeting_id=activity_id, **common)]
        if became_done:
            return [event(change.data_path, event_id=change.event_id, type="meeting.held",
                          occurred_at=change.time("marked_as_done_time", "update_time"), meeting_id=activity_id,
                          **common)]
        return []
    if not became_done:
        return []
    at = change.time("marked_as_done_time", "update_time", "add_time")
    if kind == "call":
        return [event(change.data_path, event_id=change.event_id, type="call.logged", occurred_at=at,
                      outcome="unknown", duration_s=_duration_s(data.get("duration"), change.field("duration")),
                      **common)]
    if kind == "email":
        return [event(change.data_path, event_id=change.event_id, type="email.sent", occurred_at=at,
                      email_id=activity_id, **common)]
    return [event(change.data_path, event_id=change.event_id, type="activity.logged", occurred_at=at,
                  kind=kind[:64], **common)]
