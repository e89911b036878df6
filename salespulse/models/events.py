"""Canonical CRM events: one pydantic model per contract type, joined in the discriminated union ``Event``."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

#: C0 controls (NUL, tab, newline ...) and DEL: never part of an id or a name, and they would corrupt
#: Prometheus label values, Redis keys and logs downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    found = _CONTROL.search(value)
    if found is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(found.group()):04X})")
    return value


def _not_bool(value: object) -> object:
    # JSON true/false are not numbers (pydantic's lax mode would read them as 1 and 0).
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


#: RFC 3339 date-time text; the offset it must have is then required by ``AwareDatetime`` (``timezone_aware``).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text with an offset (or an aware ``datetime`` built by a CRM normaliser): pydantic alone
    would also take epoch seconds as numbers or numeric strings."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.match(value.strip()):
        return value
    raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2026-11-22T09:30:00+01:00")


#: Checked by ``_no_control_characters`` (its message is clearer than a pattern's); the schema states it as one.
_Clean = (AfterValidator(_no_control_characters), Field(json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f]*$"}))
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128), *_Clean]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128), *_Clean]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64), *_Clean]
Text = Annotated[str, StringConstraints(min_length=1, max_length=256), *_Clean]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
#: Bounded so that sums stay finite (an ``inf`` would poison every aggregate it joins).
MAX_AMOUNT = 1e15
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False), BeforeValidator(_not_bool)]
Probability = Annotated[float, Field(ge=0, le=1), BeforeValidator(_not_bool)]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
OccurredAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


#: Static bounds of ``occurred_at`` (typos); the HTTP endpoints also refuse times beyond ``MAX_FUTURE_SKEW``.
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_OCCURRED_AT = datetime(2100, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_SKEW = timedelta(days=1)


class CallOutcome(StrEnum):
    connected = "connected"
    no_answer = "no_answer"
    voicemail = "voicemail"
    busy = "busy"
    unknown = "unknown"


class DealKind(StrEnum):
    new = "new"
    upsell = "upsell"
    cross_sell = "cross_sell"


class MeetingKind(StrEnum):
    first = "first"
    demo = "demo"
    follow_up = "follow_up"


class EventBase(BaseModel):
    """Fields every event has; ``occurred_at`` must carry a UTC offset."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_id: EventId
    occurred_at: OccurredAt
    rep_id: Id | None = None
    team: Label | None = None
    source: Label | None = None

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if not EARLIEST_OCCURRED_AT <= value < LATEST_OCCURRED_AT:
            raise ValueError(
                f"occurred_at must be from {EARLIEST_OCCURRED_AT.year} to {LATEST_OCCURRED_AT.year - 1}"
            )
        return value

    #: Which id keys the Kafka message: every event of one lead (or one deal) lands in one partition.
    _key_fields: ClassVar[tuple[str, ...]] = ("lead_id", "deal_id", "rep_id")

    @property
    def partition_key(self) -> str:
        """The Kafka message key: the lead for lead and activity events, the deal for deal events."""
        for name in self._key_fields:
            value = getattr(self, name, None)
            if value:
                return str(value)
        return self.event_id


class LeadEvent(EventBase):
    """An event about one lead (keyed by it)."""

    lead_id: Id


class DealEvent(EventBase):
    """An event about one deal (keyed by it)."""

    _key_fields: ClassVar[tuple[str, ...]] = ("deal_id",)

    deal_id: Id


class LeadCreated(LeadEvent):
    type: Literal["lead.created"]
    mql: bool | None = None


class LeadAssigned(LeadEvent):
    type: Literal["lead.assigned"]
    rep_id: Id


class LeadQualified(LeadEvent):
    """The lead became marketing-qualified (MQL) after its creation, e.g. a CRM lifecycle-stage change."""

    type: Literal["lead.qualified"]


class LeadConverted(LeadEvent):
    type: Literal["lead.converted"]
    deal_id: Id


class DealCreated(DealEvent):
    type: Literal["deal.created"]
    lead_id: Id | None = None
    pipeline: Label
    stage: Label
    amount: Amount | None = None
    currency: Currency | None = None
    probability: Probability | None = None
    kind: DealKind | None = None


class DealStageChanged(DealEvent):
    type: Literal["deal.stage_changed"]
    pipeline: Label
    from_stage: Label | None = None
    to_stage: Label
    amount: Amount | None = None
    currency: Currency | None = None
    probability: Probability | None = None


class DealWon(DealEvent):
    """A deal closed as won; without ``amount`` (thin CRM payloads) the worker takes the deal's last known one."""

    type: Literal["deal.won"]
    pipeline: Label
    amount: Amount | None = None
    currency: Currency | None = None


class DealLost(DealEvent):
    type: Literal["deal.lost"]
    pipeline: Label
    reason: Text | None = None


class DealUpdated(DealEvent):
    type: Literal["deal.updated"]
    amount: Amount | None = None
    probability: Probability | None = None
    expected_close: datetime | None = None


class CallLogged(LeadEvent):
    type: Literal["call.logged"]
    rep_id: Id
    outcome: CallOutcome
    duration_s: Annotated[float, Field(ge=0, le=30 * 86400, allow_inf_nan=False), BeforeValidator(_not_bool)] | None = None


class EmailSent(LeadEvent):
    type: Literal["email.sent"]
    rep_id: Id
    email_id: Id
    personalized: bool | None = None


class EmailEngagement(LeadEvent):
    """An open, click, reply or bounce of a sent email."""

    email_id: Id


class EmailOpened(EmailEngagement):
    type: Literal["email.opened"]


class EmailClicked(EmailEngagement):
    type: Literal["email.clicked"]


class EmailReplied(EmailEngagement):
    type: Literal["email.replied"]


class EmailBounced(EmailEngagement):
    type: Literal["email.bounced"]


class _Meeting(LeadEvent):
    rep_id: Id
    meeting_id: Id
    kind: MeetingKind | None = None


class MeetingBooked(_Meeting):
    type: Literal["meeting.booked"]


class MeetingHeld(_Meeting):
    type: Literal["meeting.held"]


class ActivityLogged(LeadEvent):
    type: Literal["activity.logged"]
    rep_id: Id
    kind: Label
    outbound: bool | None = None


class QuotaSet(EventBase):
    _key_fields: ClassVar[tuple[str, ...]] = ("rep_id",)

    type: Literal["quota.set"]
    rep_id: Id
    period: Period
    amount: Amount
    currency: Currency | None = None


class CustomerChurned(EventBase):
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["lead_id"]}, {"required": ["deal_id"]}]}
    )

    type: Literal["customer.churned"]
    lead_id: Id | None = None
    deal_id: Id | None = None

    @model_validator(mode="after")
    def _names_a_customer(self) -> "CustomerChurned":
        if not (self.lead_id or self.deal_id):
            raise ValueError("customer.churned needs lead_id or deal_id")
        return self


class DealLeadLinked(DealEvent):
    """Internal, written by the worker: the deal's partition learns its lead from ``lead.converted``."""

    type: Literal["deal.lead_linked"]
    lead_id: Id


class RepActive(EventBase):
    """Internal, written by the worker: the rep's partition learns of the rep's outbound activity
    (``rep_no_activity``: a rep's activities are spread over their leads' partitions)."""

    _key_fields: ClassVar[tuple[str, ...]] = ("rep_id",)

    type: Literal["rep.active"]
    rep_id: Id


class DealOutcome(StrEnum):
    won = "won"
    lost = "lost"


class LeadDealClosed(LeadEvent):
    """Internal, written by the worker: the lead's partition learns that its deal closed."""

    type: Literal["lead.deal_closed"]
    deal_id: Id
    pipeline: Label
    outcome: DealOutcome
    amount: Amount | None = None
    currency: Currency | None = None


EVENT_MODELS: tuple[type[EventBase], ...] = (
    LeadCreated,
    LeadAssigned,
    LeadQualified,
    LeadConverted,
    DealCreated,
    DealStageChanged,
    DealWon,
    DealLost,
    DealUpdated,
    CallLogged,
    EmailSent,
    EmailOpened,
    EmailClicked,
    EmailReplied,
    EmailBounced,
    MeetingBooked,
    MeetingHeld,
    ActivityLogged,
    QuotaSet,
    CustomerChurned,
    DealLeadLinked,
    LeadDealClosed,
    RepActive,
)

Event = Annotated[
    Union[
        LeadCreated,
        LeadAssigned,
        LeadQualified,
        LeadConverted,
        DealCreated,
        DealStageChanged,
        DealWon,
        DealLost,
        DealUpdated,
        CallLogged,
        EmailSent,
        EmailOpened,
        EmailClicked,
        EmailReplied,
        EmailBounced,
        MeetingBooked,
        MeetingHeld,
        ActivityLogged,
        QuotaSet,
        CustomerChurned,
        DealLeadLinked,
        LeadDealClosed,
        RepActive,
    ],
    Field(discriminator="type"),
]

#: Validates one event from a dict (``validate_python``) or from JSON bytes (``validate_json``).
EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = tuple(m.model_fields["type"].annotation.__args__[0] for m in EVENT_MODELS)  # type: ignore[union-attr]


#: Types only the worker writes (cross-partition links between a lead and its deal); webhooks refuse them.
INTERNAL_EVENT_TYPES: frozenset[str] = frozenset({"deal.lead_linked", "lead.deal_closed", "rep.active"})


def derived_event_id(*parts: object) -> str:
    """The fixed id of an event salespulse derives from others: its parts joined by ``:``, or, when that
    would be longer than an event id may be, a prefix and the SHA-256 of the whole (fixed all the same)."""
    joined = ":".join(str(part) for part in parts)
    if len(joined) <= 128:
        return joined
    return f"{parts[0]}:sha256:{hashlib.sha256(joined.encode()).hexdigest()}"


def event_to_json(event: EventBase) -> bytes:
    """The Kafka message value of an event: compact JSON, unset optional fields left out."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def event_from_json(raw: bytes | str) -> Event:
    """Parse and validate one event; raises ``pydantic.ValidationError`` naming the bad field."""
    return EventAdapter.validate_json(raw)
