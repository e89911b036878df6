"""HubSpot webhook batches (a JSON array of thin events) → canonical events; see docs/crm.md for the mapping.

Event ids are ``hubspot:<eventId>`` (a second event from one HubSpot event adds ``:<type>``), so a redelivered
batch is counted once. HubSpot payloads carry no previous value, amount or owner of the object: stages and
owners go through ``[crm.hubspot]`` and won/lost comes from the mapped stage's flags. ``deal.creation`` has no
stage, so it becomes ``deal.created`` only together with the deal's ``dealstage`` change in the same batch
(HubSpot sends the initial value as a property change); alone it is ignored and the deal enters salespulse
with its first stage change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from salespulse.crm_config import HubSpotMapping
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
)
from salespulse.models.events import Event, derived_event_id

#: CRM object type ids of ``object.*`` subscriptions (the new developer platform); engagements need the API.
OBJECT_TYPES = {"0-1": "contact", "0-3": "deal", "0-48": "call", "0-49": "email", "0-47": "meeting",
                "0-46": "note", "0-27": "task"}
_DEAL_ASSOCIATIONS = {"CONTACT_TO_DEAL": "contact", "DEAL_TO_CONTACT": "deal"}


@dataclass(frozen=True)
class _Item:
    path: str
    event_id: str
    at: datetime
    kind: str  # "<object>.<action>", object resolved for object.* subscriptions
    raw: dict[str, Any]

    @property
    def object_id(self) -> str:
        return id_text(self.raw.get("objectId"), f"{self.path}.objectId") or ""

    @property
    def property_name(self) -> str:
        return text(self.raw.get("propertyName"), f"{self.path}.propertyName", required=True) or ""

    @property
    def property_value(self) -> str | None:
        value = self.raw.get("propertyValue")
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise FieldProblem(f"{self.path}.propertyValue", "expected a string")


def normalise_hubspot(body: bytes, mapping: HubSpotMapping) -> Normalised:
    """Normalise one HubSpot request; raises ``Unnormalisable`` naming every bad field (nothing is kept)."""
    document = load_json(body)
    if not isinstance(document, list):
        raise Unnormalisable([{"field": "", "message": "HubSpot sends a JSON array of events"}])
    problems: list[dict[str, str]] = []
    items: list[_Item] = []
    for index, raw in enumerate(document):
        try:
            items.append(_item(f"[{index}]", raw))
        except FieldProblem as problem:
            problems.append({"field": problem.field, "message": problem.message})
    out = Normalised()
    if not problems:
        try:
            _normalise_items(items, mapping, out)
        except FieldProblem as problem:
            problems.append({"field": problem.field, "message": problem.message})
    if problems:
        raise Unnormalisable(problems)
    return out


def check_hubspot(body: bytes, mapping: HubSpotMapping) -> Normalised:
    """With enrichment on: the batch is checked as :func:`normalise_hubspot` would (bad fields named, answered
    before anything is written) and then kept whole for the enricher (``deferred``)."""
    normalise_hubspot(body, mapping)
    return Normalised(deferred=len(load_json(body)))


def _item(path: str, raw: Any) -> _Item:
    obj = as_object(raw, path)
    event_id = id_text(obj.get("eventId"), f"{path}.eventId") or ""
    at = epoch_ms(obj.get("occurredAt"), f"{path}.occurredAt")
    subscription = text(obj.get("subscriptionType"), f"{path}.subscriptionType", required=True) or ""
    kind = subscription
    if subscription.startswith("object."):
        type_id = text(obj.get("objectTypeId"), f"{path}.objectTypeId", required=True) or ""
        object_name = OBJECT_TYPES.get(type_id, f"object:{type_id[:16]}")
        kind = f"{object_name}.{subscription.removeprefix('object.')}"
    return _Item(path, f"hubspot:{event_id}", at, kind[:64], obj)


def _normalise_items(items: list[_Item], mapping: HubSpotMapping, out: Normalised) -> None:
    # A deal created in this batch takes its stage, amount and owner from this batch's property changes.
    created = {item.object_id: item for item in items if item.kind == "deal.creation"}
    initial: dict[str, dict[str, _Item]] = {}
    for item in items:
        if item.kind == "deal.propertyChange" and item.object_id in created:
            initial.setdefault(item.object_id, {}).setdefault(item.property_name, item)
    consumed = {id(i) for deal_id, props in initial.items() if "dealstage" in props for i in props.values()}

    for item in items:
        if id(item) in consumed:
            continue
        if item.kind == "deal.creation":
            props = initial.get(item.object_id, {})
            if "dealstage" in props:
                out.events += _deal_created(item, props, mapping)
            else:
                out.ignored.append("deal.creation:no_stage")
        elif item.kind == "contact.creation":
            if mapping.contact_creation_is_lead:
                out.events.append(_lead(item, "lead.created"))
            else:
                out.ignored.append(item.kind)
        elif item.kind == "contact.propertyChange":
            _contact_change(item, mapping, out)
        elif item.kind == "deal.propertyChange":
            _deal_change(item, mapping, out)
        elif item.kind in ("contact.associationChange", "deal.associationChange"):
            _association(item, out)
        else:
            out.ignored.append(item.kind)


def _lead(item: _Item, type_: str, **fields: Any) -> Event:
    return event(item.path, event_id=item.event_id, type=type_, occurred_at=item.at, lead_id=item.object_id, **fields)


def _contact_change(item: _Item, mapping: HubSpotMapping, out: Normalised) -> None:
    name, value = item.property_name, item.property_value
    if name == "hubspot_owner_id" and value:
        out.events.append(_lead(item, "lead.assigned", rep_id=mapping.rep_for(value)))
    elif name == "lifecyclestage" and value:
        step = mapping.lifecycle.get(value)
        if step in ("lead.created", "lead.qualified"):
            out.events.append(_lead(item, step))
        elif step == "lead.converted":
            # The deal is not in the payload; the contact↔deal association event carries it.
            out.ignored.append("contact.lifecyclestage:converted_without_deal")
        else:
            out.ignored.append(f"contact.lifecyclestage:{value[:32]}")
    else:
        out.ignored.append(f"contact.propertyChange:{name[:40]}")


def _deal(item: _Item, type_: str, suffix: str = "", **fields: Any) -> Event:
    return event(
        item.path, event_id=item.event_id + suffix, type=type_, occurred_at=item.at, deal_id=item.object_id, **fields
    )


def _closing(item: _Item, pipeline: str, won: bool, suffix: str = "") -> Event:
    if won:
        return _deal(item, "deal.won", suffix, pipeline=pipeline)
    return _deal(item, "deal.lost", suffix, pipeline=pipeline)


def _deal_change(item: _Item, mapping: HubSpotMapping, out: Normalised) -> None:
    name, value = item.property_name, item.property_value
    if name == "dealstage" and value:
        stage = mapping.stage_for(value)
        if stage.closed:
            out.events.append(_closing(item, stage.pipeline, stage.won))
        else:
            out.events.append(
                _deal(item, "deal.stage_changed", pipeline=stage.pipeline, to_stage=stage.stage,
                      probability=stage.probability)
            )
    elif name == "amount":
        amount = number(value, f"{item.path}.propertyValue")
        if amount is None:
            out.ignored.append("deal.amount:cleared")
        else:
            out.events.append(_deal(item, "deal.updated", amount=amount))
    elif name == "hubspot_owner_id" and value:
        out.events.append(_deal(item, "deal.updated", rep_id=mapping.rep_for(value)))
    else:
        out.ignored.append(f"deal.propertyChange:{name[:40]}")


def _deal_created(creation: _Item, props: dict[str, _Item], mapping: HubSpotMapping) -> list[Event]:
    stage_id = props["dealstage"].property_value or ""
    stage = mapping.stage_for(stage_id)
    amount = number(props["amount"].property_value, f"{props['amount'].path}.propertyValue") if "amount" in props else None
    owner = props["hubspot_owner_id"].property_value if "hubspot_owner_id" in props else None
    events = [
        _deal(creation, "deal.created", pipeline=stage.pipeline, stage=stage.stage, amount=amount,
              probability=stage.probability, rep_id=mapping.rep_for(owner))
    ]
    if stage.closed:
        events.append(_closing(creation, stage.pipeline, stage.won, ":won" if stage.won else ":lost"))
    return events


def _association(item: _Item, out: Normalised) -> None:
    association = item.raw.get("associationType")
    first = _DEAL_ASSOCIATIONS.get(association) if isinstance(association, str) else None
    if first is None or item.raw.get("associationRemoved") is True:
        out.ignored.append(f"{item.kind}:{str(association)[:32]}")
        return
    from_id = id_text(item.raw.get("fromObjectId"), f"{item.path}.fromObjectId") or ""
    to_id = id_text(item.raw.get("toObjectId"), f"{item.path}.toObjectId") or ""
    lead_id, deal_id = (from_id, to_id) if first == "contact" else (to_id, from_id)
    # HubSpot reports both directions of one association: one id for both, so the pair is counted once.
    out.events.append(
        event(item.path, event_id=derived_event_id("hubspot", "association", lead_id, deal_id), type="lead.converted",
              occurred_at=item.at, lead_id=lead_id, deal_id=deal_id)
    )
