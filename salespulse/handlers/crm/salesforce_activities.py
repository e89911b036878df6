"""Salesforce activities → canonical events: a Task (call, email or other) and an Event (a meeting).

The same record may come through an outbound message (a snapshot, values as text) and through CDC (JSON
values); both give the same event id, derived from the record id (``salesforce:task:<Id>``,
``salesforce:event:<Id>:booked``), so a task seen twice, by both channels or on create and on completion,
is counted once.

- Task, ``TaskSubtype`` ``Call``: once completed (``IsClosed`` or ``Status`` = ``Completed``), ``call.logged``
  with ``CallDisposition`` → outcome and ``CallDurationInSeconds``; ``CallType`` ``Inbound`` is not a touch:
  ``activity.logged`` kind ``inbound_call``, ``outbound = false``.
- Task, ``TaskSubtype`` ``Email`` / ``ListEmail``: ``email.sent`` (a logged email is one the rep sent).
- Other completed tasks: ``activity.logged`` with the subtype (or ``task``) as kind.
- Event: ``meeting.booked`` when created (Salesforce records no outcome of a meeting, so no ``meeting.held``).

``WhoId`` (a lead ``00Q…`` or a contact ``003…``) is the salespulse lead and ``OwnerId`` the rep; a record
without either is ignored (counted), as it touches no lead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from salespulse.crm_config import VendorMapping
from salespulse.handlers.crm.common import FieldProblem, Normalised, event, id_text, number, text, utc_time
from salespulse.models.events import Event, derived_event_id

ACTIVITY_ENTITIES = ("Task", "Event")
_EMAIL_SUBTYPES = ("Email", "ListEmail")


def call_outcome(disposition: str | None) -> str:
    """A free-text call result (Salesforce ``CallDisposition``, HubSpot's disposition label) → outcome."""
    if not disposition:
        return "unknown"
    said = disposition.strip().lower().replace("_", " ").replace("-", " ")
    if "voicemail" in said or "voice mail" in said or "left message" in said or "left live message" in said:
        return "voicemail"
    if "no answer" in said or "not answered" in said or "unanswered" in said:
        return "no_answer"
    if "busy" in said:
        return "busy"
    if "connected" in said or "answered" in said or "reached" in said:
        return "connected"
    return "unknown"


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


class ActivityRecord:
    """One Task or Event record's fields (text from outbound messages, JSON values from CDC)."""

    def __init__(self, path: str, entity: str, record_id: str, fields: Mapping[str, Any], at: datetime) -> None:
        self.path, self.entity, self.record_id, self.fields, self.at = path, entity, record_id, fields, at

    def field(self, name: str) -> str:
        return f"{self.path}.{name}"

    def time(self, *names: str) -> datetime:
        for name in names:
            value = self.fields.get(name)
            if value:
                return utc_time(value, self.field(name))
        return self.at


def activity_events(record: ActivityRecord, mapping: VendorMapping, out: Normalised) -> list[Event]:
    """The canonical events of one Task or Event record (none, and an ``ignored`` kind, when it has no lead)."""
    f = record.fields
    who = id_text(f.get("WhoId"), record.field("WhoId"), required=False)
    rep = mapping.rep_for(id_text(f.get("OwnerId"), record.field("OwnerId"), required=False))
    if who is None or rep is None:
        out.ignored.append(f"{record.entity}:{'no_who' if who is None else 'no_owner'}")
        return []
    common = {"lead_id": who, "rep_id": rep}
    if record.entity == "Event":
        return [event(record.path, event_id=derived_event_id("salesforce", "event", record.record_id, "booked"),
                      type="meeting.booked", occurred_at=record.time("CreatedDate"), meeting_id=record.record_id,
                      **common)]
    if not (_flag(f.get("IsClosed")) or (text(f.get("Status"), record.field("Status")) or "") == "Completed"):
        out.ignored.append("Task:open")
        return []
    subtype = text(f.get("TaskSubtype"), record.field("TaskSubtype")) or "Task"
    event_id = derived_event_id("salesforce", "task", record.record_id)
    at = record.time("CompletedDateTime", "CreatedDate")
    if subtype == "Call":
        if (text(f.get("CallType"), record.field("CallType")) or "") == "Inbound":
            return [event(record.path, event_id=event_id, type="activity.logged", occurred_at=at,
                          kind="inbound_call", outbound=False, **common)]
        duration = number(f.get("CallDurationInSeconds"), record.field("CallDurationInSeconds"))
        if duration is not None and duration < 0:
            raise FieldProblem(record.field("CallDurationInSeconds"), "a duration cannot be negative")
        disposition = text(f.get("CallDisposition"), record.field("CallDisposition"))
        return [event(record.path, event_id=event_id, type="call.logged", occurred_at=at,
                      outcome=call_outcome(disposition), duration_s=duration, **common)]
    if subtype in _EMAIL_SUBTYPES:
        return [event(record.path, event_id=event_id, type="email.sent", occurred_at=at,
                      email_id=record.record_id, **common)]
    return [event(record.path, event_id=event_id, type="activity.logged", occurred_at=at,
                  kind=subtype.strip().lower()[:64] or "task", **common)]
