"""Salesforce → canonical events: Outbound Messages (SOAP ``notifications``) and Change Data Capture (JSON).

Outbound messages carry a *snapshot* of the record (its fields as they are when sent), up to 100 per
message; ids are ``salesforce:<Notification Id>`` (Salesforce may deliver a notification twice).
An Opportunity snapshot is ``deal.created`` when ``CreatedDate`` equals ``LastModifiedDate``, else
``deal.won`` / ``deal.lost`` when closed, else ``deal.stage_changed`` to its ``StageName``; a Lead snapshot is
``lead.created`` when new, ``lead.converted`` when converted to an opportunity, else ``lead.assigned`` to its
owner. Point the workflow rule at creation and ``ISCHANGED(StageName)`` / ``ISCHANGED(OwnerId)`` (docs/crm.md).

CDC events name their changes (``changedFields``); ids are
``salesforce-cdc:<transactionKey>:<sequenceNumber>:<recordId>``. Tasks and Events (calls, emails, meetings)
come through both channels: see :mod:`salespulse.handlers.crm.salesforce_activities`. XML is parsed with defusedxml (no entity
expansion, no external references, no DTDs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from salespulse.crm_config import VendorMapping
from salespulse.handlers.crm.common import (
    FieldProblem,
    Normalised,
    Unnormalisable,
    as_object,
    epoch_ms,
    event,
    id_text,
    load_json,
    number,
    text,
    utc_time,
)
from salespulse.handlers.crm.salesforce_activities import ACTIVITY_ENTITIES, ActivityRecord, activity_events
from salespulse.models.events import Event

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100

#: The answer Salesforce needs, or it resends the message.
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


class WrongOrganization(Exception):
    """The message's ``OrganizationId`` is not the configured one (answered 401)."""


def same_org(configured: str, given: str) -> bool:
    """Org ids come as 15 (case-sensitive) or 18 characters; the first 15 identify the org."""
    return len(given) in (15, 18) and configured[:15] == given[:15]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


Notification = tuple[str, str, str, dict[str, str]]


def check_organization(body: bytes, org_id: str) -> None:
    """Outbound messages are unsigned: their ``OrganizationId`` is the credential, checked before anything else
    is done with the body. One without a readable, matching id raises ``WrongOrganization`` (401): it is never
    dead-lettered, so unauthenticated junk cannot fill the DLQ."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        raise WrongOrganization("not a SOAP outbound message with the configured OrganizationId") from None
    notifications = root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notifications")
    given = _child_text(notifications, "OrganizationId") if notifications is not None else None
    if not same_org(org_id, given or ""):
        raise WrongOrganization("OrganizationId is not the configured SALESPULSE_SALESFORCE_ORG_ID")


def parse_outbound(body: bytes, org_id: str) -> list[Notification]:
    """The ``notifications`` of a SOAP message as (path, notification id, sObject type, fields) tuples."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise Unnormalisable([{"field": "", "message": f"not a SOAP message: {type(exc).__name__}"}]) from None
    notifications = root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise Unnormalisable([{"field": "Envelope.Body.notifications", "message": "missing"}])
    given_org = _child_text(notifications, "OrganizationId") or ""
    if not same_org(org_id, given_org):
        raise WrongOrganization("OrganizationId is not the configured SALESPULSE_SALESFORCE_ORG_ID")
    items: list[Notification] = []
    for index, notification in enumerate(n for n in notifications if _local(n.tag) == "Notification"):
        path = f"notifications.Notification[{index}]"
        sobject = next((c for c in notification if _local(c.tag) == "sObject"), None)
        if sobject is None:
            raise Unnormalisable([{"field": f"{path}.sObject", "message": "missing"}])
        sobject_type = _local(sobject.get(f"{{{XSI_NS}}}type", "").split(":")[-1])
        fields = {_local(c.tag): (c.text or "").strip() for c in sobject}
        items.append((path, _child_text(notification, "Id") or "", sobject_type, fields))
    if len(items) > MAX_NOTIFICATIONS:
        raise Unnormalisable([{"field": "notifications", "message": f"{len(items)} notifications; at most 100"}])
    return items


def normalise_outbound(body: bytes, org_id: str, mapping: VendorMapping) -> Normalised:
    """Normalise one outbound message; raises ``WrongOrganization`` or ``Unnormalisable`` (naming the field)."""
    items = parse_outbound(body, org_id)
    out = Normalised()
    problems: list[dict[str, str]] = []
    for path, notification_id, sobject_type, fields in items:
        try:
            nid = id_text(notification_id, f"{path}.Id") or ""
            out.events += _snapshot(path, f"salesforce:{nid}", sobject_type, fields, mapping, out)
        except FieldProblem as problem:
            problems.append({"field": problem.field, "message": problem.message})
    if problems:
        raise Unnormalisable(problems)
    return out


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _snapshot(path: str, event_id: str, sobject_type: str, fields: dict[str, str], mapping: VendorMapping,
              out: Normalised) -> list[Event]:
    sobject_path = f"{path}.sObject"
    if sobject_type not in ("Opportunity", "Lead", *ACTIVITY_ENTITIES):
        out.ignored.append(f"outbound:{sobject_type[:40] or 'unknown'}")
        return []
    record_id = id_text(fields.get("Id"), f"{sobject_path}.Id")
    created = fields.get("CreatedDate")
    modified = fields.get("LastModifiedDate") or created
    at: datetime = utc_time(modified, f"{sobject_path}.LastModifiedDate")
    if sobject_type in ACTIVITY_ENTITIES:
        return activity_events(ActivityRecord(sobject_path, sobject_type, record_id or "", fields, at), mapping, out)
    is_new = created is not None and created == modified
    rep = mapping.rep_for(fields.get("OwnerId") or None)
    if sobject_type == "Opportunity":
        stage_name = text(fields.get("StageName"), f"{sobject_path}.StageName", required=True) or ""
        stage = mapping.stages.get(stage_name)
        closed = stage.closed if stage else bool(_bool(fields.get("IsClosed")))
        won = stage.won if stage else bool(_bool(fields.get("IsWon")))
        pipeline = stage.pipeline if stage else mapping.pipeline
        stage_label = stage.stage if stage else stage_name[:64]
        amount = number(fields.get("Amount"), f"{sobject_path}.Amount")
        probability = number(fields.get("Probability"), f"{sobject_path}.Probability")
        currency = fields.get("CurrencyIsoCode") or None
        common = {"deal_id": record_id, "occurred_at": at, "rep_id": rep}
        events: list[Event] = []
        if is_new:
            events.append(event(sobject_path, event_id=event_id, type="deal.created", pipeline=pipeline,
                                stage=stage_label, amount=amount, currency=currency,
                                probability=probability / 100 if probability is not None else None, **common))
        suffix = ":closed" if is_new else ""
        if closed and won:
            events.append(event(sobject_path, event_id=event_id + suffix, type="deal.won", pipeline=pipeline,
                                amount=amount, currency=currency, **common))
        elif closed:
            events.append(event(sobject_path, event_id=event_id + suffix, type="deal.lost", pipeline=pipeline,
                                **common))
        elif not is_new:
            events.append(event(sobject_path, event_id=event_id, type="deal.stage_changed", pipeline=pipeline,
                                to_stage=stage_label, amount=amount, currency=currency,
                                probability=probability / 100 if probability is not None else None, **common))
        return events
    if sobject_type == "Lead":
        common = {"lead_id": record_id, "occurred_at": at}
        if is_new:
            return [event(sobject_path, event_id=event_id, type="lead.created", rep_id=rep,
                          source=(fields.get("LeadSource") or None), **common)]
        opportunity = fields.get("ConvertedOpportunityId")
        if _bool(fields.get("IsConverted")) and opportunity:
            return [event(sobject_path, event_id=event_id, type="lead.converted", deal_id=opportunity, **common)]
        if rep is not None:
            return [event(sobject_path, event_id=event_id, type="lead.assigned", rep_id=rep, **common)]
    out.ignored.append(f"outbound:{sobject_type}:no_change")
    return []


# --- Change Data Capture ---------------------------------------------------------------------------------------


def normalise_cdc(body: bytes, mapping: VendorMapping) -> Normalised:
    """Normalise CDC change events: one object or an array; see :func:`change_payloads` for the shapes."""
    document = load_json(body)
    items = document if isinstance(document, list) else [document]
    out = Normalised()
    problems: list[dict[str, str]] = []
    for index, raw in enumerate(items):
        try:
            for path, payload in change_payloads(f"[{index}]" if isinstance(document, list) else "body", raw):
                out.events += _change_event(path, payload, mapping, out)
        except FieldProblem as problem:
            problems.append({"field": problem.field, "message": problem.message})
    if problems:
        raise Unnormalisable(problems)
    return out


def change_payloads(path: str, raw: Any) -> list[tuple[str, dict[str, Any]]]:
    """The change-event payloads in one forwarded item, with their paths. Taken:

    - the bare payload (with ``ChangeEventHeader``) or ``{"payload": ...}``;
    - a CometD message ``{"channel": "/data/…ChangeEvent", "data": {"schema", "payload", "event": {"replayId"}}}``;
    - the Pub/Sub API's ``ConsumerEvent`` ``{"event": {"id", "schema_id", "payload"}, "replay_id"}`` and a
      ``FetchResponse`` ``{"events": [ConsumerEvent, …]}``, with the Avro payload decoded to JSON.
    """
    item = as_object(raw, path)
    if "channel" in item and "data" in item:
        data = as_object(item["data"], f"{path}.data")
        return [(f"{path}.data.payload", _payload(data.get("payload"), f"{path}.data.payload"))]
    if isinstance(item.get("events"), list) and "ChangeEventHeader" not in item:
        found: list[tuple[str, dict[str, Any]]] = []
        for n, consumer_event in enumerate(item["events"]):
            found += change_payloads(f"{path}.events[{n}]", consumer_event)
        return found
    if isinstance(item.get("event"), dict) and "payload" in item["event"]:
        return [(f"{path}.event.payload", _payload(item["event"]["payload"], f"{path}.event.payload"))]
    if "payload" in item:
        return [(f"{path}.payload", _payload(item["payload"], f"{path}.payload"))]
    return [(path, item)]


def _payload(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, str):
        raise FieldProblem(path, "the payload is still Avro-encoded: decode it with the event's schema first")
    return as_object(value, path)


def _change_event(path: str, payload: dict[str, Any], mapping: VendorMapping, out: Normalised) -> list[Event]:
    header_path = f"{path}.ChangeEventHeader"
    header = as_object(payload.get("ChangeEventHeader"), header_path)
    entity = text(header.get("entityName"), f"{header_path}.entityName", required=True) or ""
    change_type = text(header.get("changeType"), f"{header_path}.changeType", required=True) or ""
    at = epoch_ms(header.get("commitTimestamp"), f"{header_path}.commitTimestamp")
    transaction = id_text(header.get("transactionKey"), f"{header_path}.transactionKey") or ""
    sequence = id_text(header.get("sequenceNumber"), f"{header_path}.sequenceNumber") or ""
    record_ids = header.get("recordIds")
    if not isinstance(record_ids, list) or not record_ids:
        raise FieldProblem(f"{header_path}.recordIds", "expected a non-empty list of record ids")
    changed = header.get("changedFields") or []
    if not isinstance(changed, list):
        raise FieldProblem(f"{header_path}.changedFields", "expected a list")
    changed_fields = {f for f in changed if isinstance(f, str)}
    if any(f.startswith("0x") for f in changed_fields):
        raise FieldProblem(f"{header_path}.changedFields",
                           "a bitmap (Pub/Sub API): decode it to field names with the event's schema first")
    if change_type not in ("CREATE", "UPDATE") or entity not in ("Lead", "Opportunity", *ACTIVITY_ENTITIES):
        out.ignored.append(f"cdc:{entity[:32]}.{change_type[:16]}")
        return []
    events: list[Event] = []
    for n, raw_id in enumerate(record_ids):
        record_id = id_text(raw_id, f"{header_path}.recordIds[{n}]") or ""
        if entity in ACTIVITY_ENTITIES:
            if change_type == "UPDATE" and entity == "Event":
                out.ignored.append("cdc:Event.UPDATE")
                continue
            events += activity_events(ActivityRecord(path, entity, record_id, payload, at), mapping, out)
            continue
        event_id = f"salesforce-cdc:{transaction}:{sequence}:{record_id}"
        ctx = _Cdc(path, payload, changed_fields, change_type == "CREATE", event_id, record_id, at)
        produced = _cdc_lead(ctx, mapping) if entity == "Lead" else _cdc_opportunity(ctx, mapping)
        if not produced:
            out.ignored.append(f"cdc:{entity}.UPDATE:unmapped_fields")
        events += produced
    return events


class _Cdc:
    def __init__(self, path: str, payload: dict[str, Any], changed: set[str], is_create: bool, event_id: str,
                 record_id: str, at: datetime) -> None:
        self.path, self.payload, self.changed, self.is_create = path, payload, changed, is_create
        self.event_id, self.record_id, self.at = event_id, record_id, at

    def field(self, name: str) -> str:
        return f"{self.path}.{name}"


def _cdc_lead(c: _Cdc, mapping: VendorMapping) -> list[Event]:
    owner = id_text(c.payload.get("OwnerId"), c.field("OwnerId"), required=False)
    rep = mapping.rep_for(owner)
    common = {"lead_id": c.record_id, "occurred_at": c.at}
    if c.is_create:
        source = text(c.payload.get("LeadSource"), c.field("LeadSource"))
        return [event(c.path, event_id=c.event_id, type="lead.created", rep_id=rep,
                      source=source[:64] if source else None, **common)]
    opportunity = id_text(c.payload.get("ConvertedOpportunityId"), c.field("ConvertedOpportunityId"), required=False)
    if "IsConverted" in c.changed and c.payload.get("IsConverted") is True and opportunity:
        return [event(c.path, event_id=c.event_id, type="lead.converted", deal_id=opportunity, **common)]
    if "OwnerId" in c.changed and rep is not None:
        return [event(c.path, event_id=c.event_id, type="lead.assigned", rep_id=rep, **common)]
    return []


def _cdc_opportunity(c: _Cdc, mapping: VendorMapping) -> list[Event]:
    p = c.payload
    amount = number(p.get("Amount"), c.field("Amount"))
    raw_probability = number(p.get("Probability"), c.field("Probability"))
    probability = raw_probability / 100 if raw_probability is not None else None
    currency = text(p.get("CurrencyIsoCode"), c.field("CurrencyIsoCode"))
    rep = mapping.rep_for(id_text(p.get("OwnerId"), c.field("OwnerId"), required=False))
    common = {"deal_id": c.record_id, "occurred_at": c.at}
    stage_name = text(p.get("StageName"), c.field("StageName"))
    stage = mapping.stages.get(stage_name) if stage_name else None
    closed = stage.closed if stage else p.get("IsClosed") is True
    won = stage.won if stage else p.get("IsWon") is True
    pipeline = stage.pipeline if stage else mapping.pipeline
    stage_label = stage.stage if stage else (stage_name or "")[:64]
    events: list[Event] = []
    if c.is_create:
        if not stage_name:
            raise FieldProblem(c.field("StageName"), "a new Opportunity needs its StageName")
        events.append(event(c.path, event_id=c.event_id, type="deal.created", pipeline=pipeline, stage=stage_label,
                            amount=amount, currency=currency, probability=probability, rep_id=rep, **common))
        if closed:
            events.append(_sf_closing(c, won, ":closed", pipeline, amount, currency, rep, common))
        return events
    if "StageName" in c.changed and stage_name:
        if closed:
            return [_sf_closing(c, won, "", pipeline, amount, currency, rep, common)]
        events.append(event(c.path, event_id=c.event_id, type="deal.stage_changed", pipeline=pipeline,
                            to_stage=stage_label, amount=amount, currency=currency, probability=probability,
                            **common))
    updates: dict[str, Any] = {}
    if "Amount" in c.changed and amount is not None:
        updates["amount"] = amount
    if "Probability" in c.changed and probability is not None:
        updates["probability"] = probability
    if "OwnerId" in c.changed and rep is not None:
        updates["rep_id"] = rep
    if updates:
        suffix = ":updated" if events else ""
        events.append(event(c.path, event_id=c.event_id + suffix, type="deal.updated", **common, **updates))
    return events


def _sf_closing(c: _Cdc, won: bool, suffix: str, pipeline: str, amount: float | None, currency: str | None,
                rep: str | None, common: dict[str, Any]) -> Event:
    if won:
        return event(c.path, event_id=c.event_id + suffix, type="deal.won", pipeline=pipeline, amount=amount,
                     currency=currency, rep_id=rep, **common)
    return event(c.path, event_id=c.event_id + suffix, type="deal.lost", pipeline=pipeline, rep_id=rep, **common)
