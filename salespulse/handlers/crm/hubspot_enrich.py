"""HubSpot webhook batches enriched through the CRM API → canonical events (the enricher's pure-ish core).

A HubSpot webhook is thin: a call's ``object.creation`` names the call and nothing else. :func:`enrich_batch`
reads what the metrics need from the API (:mod:`salespulse.handlers.crm.hubspot_api`):

- **engagements** (calls ``0-48``, emails ``0-49``, meetings ``0-47``, notes ``0-46``, tasks ``0-27``): their
  properties and associated contacts (associations v4). One event per associated contact (at most 10), with
  ids derived from HubSpot's own ids (``hubspot:call:<call>:<contact>``), so a creation and a later status
  change of one call, or a redelivery, count once. Only outbound touches are touches: an outbound call is
  ``call.logged``, an inbound one ``activity.logged`` (``inbound_call``, ``outbound = false``); an email the
  rep sent is ``email.sent``, an incoming one ``email.replied``, a bounce ``email.bounced``; a meeting is
  ``meeting.booked`` and, with outcome ``COMPLETED``, ``meeting.held``; notes and completed tasks are
  ``activity.logged`` (not touches).
- **contacts** created: ``lead.created`` and, with an owner, ``lead.assigned``; created at a lifecycle stage
  that ``[crm.hubspot] lifecycle`` maps to ``lead.qualified`` (an MQL), ``lead.qualified`` too.
- **deals** created: ``deal.created`` at the deal's first stage (``propertiesWithHistory``) with its amount,
  currency, owner and pipeline (``hubspot:deal:<id>:created``); the ``dealstage`` change HubSpot sends for
  the initial value is then skipped. Stages are named and flagged closed / won by ``[crm.hubspot]``, else by
  the portal's pipelines (``GET /crm/v3/pipelines/deals``, cached).

Everything else (property changes, associations) is normalised as without the API
(:mod:`salespulse.handlers.crm.hubspot`). An object deleted since the webhook (404), or a request HubSpot
refuses, dead-letters that item with its reason; rate limits, 5xx and network errors raise
``ApiUnavailable`` and the caller retries the whole batch (the ids make that safe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from salespulse.crm_config import HubSpotMapping, StageMapping
from salespulse.handlers.crm.common import FieldProblem, Normalised, epoch_ms, event, load_json, number, utc_time
from salespulse.handlers.crm.hubspot import _closing, _deal, _Item, _item, _normalise_items
from salespulse.handlers.crm.hubspot_api import ApiRefused, HubSpotApi, ObjectGone
from salespulse.handlers.crm.salesforce_activities import call_outcome
from salespulse.models.events import Event, derived_event_id

#: Engagement kinds and the property changes that may finish one (a call ends, a meeting is held).
ENGAGEMENTS: dict[str, tuple[str, frozenset[str]]] = {
    "call": ("calls", frozenset({"hs_call_status", "hs_call_disposition"})),
    "email": ("emails", frozenset({"hs_email_status"})),
    "meeting": ("meetings", frozenset({"hs_meeting_outcome"})),
    "note": ("notes", frozenset()),
    "task": ("tasks", frozenset({"hs_task_status"})),
}
PROPERTIES: dict[str, tuple[str, ...]] = {
    "calls": ("hs_timestamp", "hs_call_direction", "hs_call_disposition", "hs_call_status", "hs_call_duration",
              "hubspot_owner_id"),
    "emails": ("hs_timestamp", "hs_email_direction", "hs_email_status", "hubspot_owner_id"),
    "meetings": ("hs_timestamp", "hs_createdate", "hs_meeting_end_time", "hs_meeting_outcome", "hubspot_owner_id"),
    "notes": ("hs_timestamp", "hubspot_owner_id"),
    "tasks": ("hs_timestamp", "hs_task_status", "hs_task_type", "hs_task_completion_date", "hubspot_owner_id"),
    "contacts": ("createdate", "hubspot_owner_id", "lifecyclestage"),
    "deals": ("createdate", "dealstage", "pipeline", "amount", "deal_currency_code", "hubspot_owner_id"),
}
#: HubSpot's default call outcomes (``hs_call_disposition`` GUIDs); custom outcomes map by their label.
CALL_DISPOSITIONS = {
    "f240bbac-87c9-4f6e-bf70-924b57d47db7": "connected",
    "73a0d17f-1163-4015-bdd5-ec830791da20": "no_answer",
    "b2cf5968-551e-4856-9783-52b3da59a7d0": "voicemail",
    "a4c4c377-d246-4b32-a13b-75a56a4cd0ff": "voicemail",  # left live message
    "9d9162e7-6cf3-4944-bf63-4dff82258764": "busy",
    "17b47fee-58de-441e-a44c-c6300d46f273": "unknown",  # wrong number
}
_CALL_STATUS_OUTCOME = {"BUSY": "busy", "NO_ANSWER": "no_answer", "FAILED": "no_answer", "MISSED": "no_answer"}
_CALL_UNFINISHED = frozenset({"CONNECTING", "IN_PROGRESS", "QUEUED", "RINGING", "CALLING_CRM_USER"})
_EMAIL_NOT_SENT = frozenset({"FAILED", "SCHEDULED", "SENDING"})
#: A ``dealstage`` change this close to the deal's creation is HubSpot reporting the initial value.
INITIAL_VALUE_WINDOW_S = 5.0
MAX_CONTACTS = 10
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass
class Enriched:
    """One batch's canonical events, ignored kinds, and the items dead-lettered with their reasons."""

    events: list[Event] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    dead: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def slug(label: str, fallback: str) -> str:
    """A CRM label as a metric label value: ``"Contract Sent"`` → ``contract_sent``."""
    return _SLUG.sub("_", label.strip().lower()).strip("_")[:64] or fallback[:64]


def pipeline_stage_mappings(pipelines: list[dict[str, Any]]) -> dict[str, StageMapping]:
    """Stage id → mapping from ``GET /crm/v3/pipelines/deals``: labels as names, ``displayOrder`` as order,
    closed from ``metadata.isClosed`` and won when closed at probability 1."""
    out: dict[str, StageMapping] = {}
    for pipeline in pipelines:
        if pipeline.get("archived") is True:
            continue
        name = slug(str(pipeline.get("label") or ""), str(pipeline.get("id") or "pipeline"))
        for stage in pipeline.get("stages") or []:
            if not isinstance(stage, dict) or stage.get("archived") is True or not stage.get("id"):
                continue
            meta = stage.get("metadata") if isinstance(stage.get("metadata"), dict) else {}
            closed = str(meta.get("isClosed", "false")).lower() == "true"
            try:
                probability: float | None = min(max(float(meta["probability"]), 0.0), 1.0)
            except (KeyError, TypeError, ValueError):
                probability = None
            order = stage.get("displayOrder")
            out[str(stage["id"])] = StageMapping(
                pipeline=name, stage=slug(str(stage.get("label") or ""), str(stage["id"])), closed=closed,
                won=closed and probability == 1.0, probability=probability,
                order=order if isinstance(order, int) and 0 <= order <= 10_000 else None,
            )
    return out


def _time(value: str | None, path: str, default: datetime) -> datetime:
    """HubSpot's times: ISO 8601 (``2026-01-10T09:05:00.000Z``) or epoch milliseconds as text."""
    if not value:
        return default
    if value.isdigit():
        return epoch_ms(int(value), path)
    return utc_time(value, path)


class _Batch:
    """The state of one batch's enrichment: the API, the mapping (with the portal's stages), the output."""

    def __init__(self, api: HubSpotApi, mapping: HubSpotMapping) -> None:
        self.api, self.mapping, self.out = api, mapping, Enriched()

    async def engagement(self, item: _Item, name: str) -> None:
        object_type, finishing = ENGAGEMENTS[name]
        action = item.kind.split(".", 1)[1]
        if action == "propertyChange" and item.raw.get("propertyName") not in finishing:
            self.out.ignored.append(f"{name}.propertyChange:{str(item.raw.get('propertyName'))[:40]}")
            return
        if action not in ("creation", "propertyChange"):
            self.out.ignored.append(item.kind)
            return
        props = await self.api.object(object_type, item.object_id, PROPERTIES[object_type])
        contacts = await self.api.associated(object_type, item.object_id, "contacts", MAX_CONTACTS)
        rep = self.mapping.rep_for(props.get("hubspot_owner_id"))
        if not contacts:
            self.out.ignored.append(f"{name}:no_contact")
            return
        at = _time(props.get("hs_timestamp"), f"{item.path}:{name}.hs_timestamp", item.at)
        for contact in contacts:
            built = getattr(self, f"_{name}")(item, props, contact, rep, at)
            self.out.events += built

    def _no_rep(self, name: str) -> list[Event]:
        self.out.ignored.append(f"{name}:no_owner")
        return []

    def _call(self, item: _Item, p: dict[str, str | None], contact: str, rep: str | None, at: datetime) -> list[Event]:
        status = (p.get("hs_call_status") or "").upper()
        if status in _CALL_UNFINISHED:
            self.out.ignored.append("call:unfinished")
            return []
        if rep is None:
            return self._no_rep("call")
        eid = derived_event_id("hubspot", "call", item.object_id, contact)
        common = {"event_id": eid, "occurred_at": at, "lead_id": contact, "rep_id": rep}
        if (p.get("hs_call_direction") or "OUTBOUND").upper() == "INBOUND":
            return [event(item.path, type="activity.logged", kind="inbound_call", outbound=False, **common)]
        disposition = p.get("hs_call_disposition") or ""
        outcome = CALL_DISPOSITIONS.get(disposition) or _CALL_STATUS_OUTCOME.get(status) or call_outcome(disposition)
        duration_ms = p.get("hs_call_duration")
        duration = float(duration_ms) / 1000 if duration_ms and duration_ms.replace(".", "", 1).isdigit() else None
        return [event(item.path, type="call.logged", outcome=outcome, duration_s=duration, **common)]

    def _email(self, item: _Item, p: dict[str, str | None], contact: str, rep: str | None,
               at: datetime) -> list[Event]:
        direction = (p.get("hs_email_direction") or "EMAIL").upper()
        status = (p.get("hs_email_status") or "").upper()
        common = {"occurred_at": at, "lead_id": contact, "email_id": item.object_id}
        if direction == "INCOMING_EMAIL":  # the lead wrote: a reply, never a touch
            return [event(item.path, event_id=derived_event_id("hubspot", "email", item.object_id, contact, "replied"),
                          type="email.replied", rep_id=rep, **common)]
        if direction != "EMAIL":
            self.out.ignored.append(f"email:{direction.lower()[:32]}")
            return []
        if status == "BOUNCED":
            return [event(item.path, event_id=derived_event_id("hubspot", "email", item.object_id, contact, "bounced"),
                          type="email.bounced", rep_id=rep, **common)]
        if status in _EMAIL_NOT_SENT:
            self.out.ignored.append(f"email:{status.lower()}")
            return []
        if rep is None:
            return self._no_rep("email")
        return [event(item.path, event_id=derived_event_id("hubspot", "email", item.object_id, contact, "sent"),
                      type="email.sent", rep_id=rep, **common)]

    def _meeting(self, item: _Item, p: dict[str, str | None], contact: str, rep: str | None,
                 at: datetime) -> list[Event]:
        if rep is None:
            return self._no_rep("meeting")
        booked_at = _time(p.get("hs_createdate"), f"{item.path}:meeting.hs_createdate", item.at)
        common = {"lead_id": contact, "rep_id": rep, "meeting_id": item.object_id}
        events = [event(item.path, event_id=derived_event_id("hubspot", "meeting", item.object_id, contact, "booked"),
                        type="meeting.booked", occurred_at=booked_at, **common)]
        if (p.get("hs_meeting_outcome") or "").upper() == "COMPLETED":
            held_at = _time(p.get("hs_meeting_end_time"), f"{item.path}:meeting.hs_meeting_end_time", at)
            events.append(event(item.path, event_id=derived_event_id("hubspot", "meeting", item.object_id, contact,
                                                                     "held"),
                                type="meeting.held", occurred_at=held_at, **common))
        return events

    def _note(self, item: _Item, p: dict[str, str | None], contact: str, rep: str | None, at: datetime) -> list[Event]:
        if rep is None:
            return self._no_rep("note")
        return [event(item.path, event_id=derived_event_id("hubspot", "note", item.object_id, contact),
                      type="activity.logged", occurred_at=at, lead_id=contact, rep_id=rep, kind="note")]

    def _task(self, item: _Item, p: dict[str, str | None], contact: str, rep: str | None, at: datetime) -> list[Event]:
        if (p.get("hs_task_status") or "").upper() != "COMPLETED":
            self.out.ignored.append("task:open")
            return []
        if rep is None:
            return self._no_rep("task")
        done = _time(p.get("hs_task_completion_date"), f"{item.path}:task.hs_task_completion_date", at)
        kind = slug(f"task_{p.get('hs_task_type') or 'todo'}", "task")
        return [event(item.path, event_id=derived_event_id("hubspot", "task", item.object_id, contact),
                      type="activity.logged", occurred_at=done, lead_id=contact, rep_id=rep, kind=kind)]

    async def contact_created(self, item: _Item) -> None:
        if not self.mapping.contact_creation_is_lead:
            self.out.ignored.append(item.kind)
            return
        props = await self.api.object("contacts", item.object_id, PROPERTIES["contacts"])
        at = _time(props.get("createdate"), f"{item.path}:contact.createdate", item.at)
        common = {"occurred_at": at, "lead_id": item.object_id}
        self.out.events.append(event(item.path, event_id=item.event_id, type="lead.created", **common))
        owner = props.get("hubspot_owner_id")
        if owner:
            self.out.events.append(event(item.path, event_id=item.event_id + ":assigned", type="lead.assigned",
                                         rep_id=self.mapping.rep_for(owner), **common))
        if self.mapping.lifecycle.get(props.get("lifecyclestage") or "") == "lead.qualified":
            self.out.events.append(event(item.path, event_id=item.event_id + ":qualified", type="lead.qualified",
                                         **common))

    async def deal(self, item: _Item) -> tuple[dict[str, Any], str]:
        """The deal's properties and the stage it was created in (the oldest of its ``dealstage`` history)."""
        body = await self.api.get(f"/crm/v3/objects/deals/{item.object_id}",
                                  {"properties": ",".join(PROPERTIES["deals"]), "propertiesWithHistory": "dealstage"})
        props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        history = (body.get("propertiesWithHistory") or {}).get("dealstage") or []
        first = min((h for h in history if isinstance(h, dict) and h.get("value")),
                    key=lambda h: str(h.get("timestamp") or ""), default=None)
        return props, str(first["value"]) if first else str(props.get("dealstage") or "")

    async def deal_created(self, item: _Item) -> None:
        props, stage_id = await self.deal(item)
        if not stage_id:
            raise FieldProblem(f"{item.path}:deal.dealstage", "the deal has no stage")
        stage = self.mapping.stage_for(stage_id, props.get("pipeline"))
        at = _time(props.get("createdate"), f"{item.path}:deal.createdate", item.at)
        amount = number(props.get("amount"), f"{item.path}:deal.amount")
        currency = props.get("deal_currency_code") or None
        deal_id = derived_event_id("hubspot", "deal", item.object_id, "created")
        created = _Item(item.path, deal_id, at, item.kind, item.raw)
        self.out.events.append(_deal(created, "deal.created", pipeline=stage.pipeline, stage=stage.stage,
                                     amount=amount, currency=currency,
                                     probability=stage.probability,
                                     rep_id=self.mapping.rep_for(props.get("hubspot_owner_id"))))
        if stage.closed:
            self.out.events.append(_closing(created, stage.pipeline, stage.won, ":won" if stage.won else ":lost"))

    async def is_initial_stage(self, item: _Item) -> bool:
        """True if this ``dealstage`` change is HubSpot reporting the stage the deal was created with (that
        stage, at the deal's creation): ``deal.created`` has it already. A move right after is kept."""
        props, first_stage = await self.deal(item)
        created = _time(props.get("createdate"), f"{item.path}:deal.createdate", item.at)
        return (item.raw.get("propertyValue") == first_stage
                and abs((item.at - created).total_seconds()) <= INITIAL_VALUE_WINDOW_S)


async def enrich_batch(body: bytes, api: HubSpotApi, mapping: HubSpotMapping) -> Enriched:
    """The canonical events of one HubSpot batch, reading what the webhook lacks from the API.

    Raises ``FieldProblem`` / ``Unnormalisable`` for a batch that cannot be read (dead-lettered whole by the
    caller) and ``ApiUnavailable`` when HubSpot cannot answer now (the caller retries the batch).
    """
    document = load_json(body)
    if not isinstance(document, list):
        raise FieldProblem("", "HubSpot sends a JSON array of events")
    items = [_item(f"[{index}]", raw) for index, raw in enumerate(document)]
    if any(i.kind.startswith("deal.") for i in items):
        stages = pipeline_stage_mappings(await api.deal_pipelines())
        mapping = mapping.model_copy(update={"stages": {**stages, **mapping.stages}})
    batch = _Batch(api, mapping)
    plain: list[_Item] = []
    for item in items:
        name, _, action = item.kind.partition(".")
        try:
            if name in ENGAGEMENTS:
                await batch.engagement(item, name)
            elif item.kind == "contact.creation":
                await batch.contact_created(item)
            elif item.kind == "deal.creation":
                await batch.deal_created(item)
            elif item.kind == "deal.propertyChange" and item.raw.get("propertyName") == "dealstage":
                if await batch.is_initial_stage(item):
                    batch.out.ignored.append("deal.dealstage:initial")
                else:
                    plain.append(item)
            else:
                plain.append(item)
        except (ObjectGone, ApiRefused, FieldProblem) as exc:
            batch.out.dead.append((f"hubspot enrichment: {item.kind} {item.object_id}: {exc}", item.raw))
    rest = Normalised()
    _normalise_items(plain, mapping, rest)
    batch.out.events += rest.events
    batch.out.ignored += rest.ignored
    return batch.out
