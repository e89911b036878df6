"""One lead as the engagement family keeps it: typed, compact in memory, JSON in the changelog.

In memory a lead is a slotted ``Lead`` with its touches as ``Touch`` tuples and its emails and meetings
as slotted records, and the repeated strings (rep, team, channel, source) interned: a month of history
holds hundreds of thousands of them, and a dict per email or a fresh copy of every rep's name per touch
cost several times the state itself. In the changelog (``RecordLog`` records) a lead is the JSON object
it always was, so records written before these types load unchanged::

    {"wm": offset, "created": at, "source": str|null, "team": str|null, "converted": at, "won": at,
     "quiet": true, "last_seen": at,
     "touches": [[at, channel, rep, team, connected, event id]],            (calls, outbound activities)
     "emails": {email id: {"at", "rep", "team", "personalized", "opened", "clicked", "replied", "bounced"}},
     "meetings": {meeting id: {"at", "rep", "team", "kind", "held"}}}

A key is written only when set (a flag only when true), as before. Most leads have no email or no
meeting: their ``emails`` and ``meetings`` are one shared empty dict (``email``/``meeting`` give the lead
its own on the first one), and ``touches`` a tuple, so an untouched lead holds no empty containers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from sys import intern
from typing import Any, Final, NamedTuple, TypeVar

from salespulse.families.state import Cell, StateIndex, TypedCodec, interned



#: The ``emails`` and ``meetings`` of every lead without any: read-only by convention (only ``Lead.email`` and
#: ``Lead.meeting`` add items, to a dict of the lead's own).
_NONE: Final[dict[Any, Any]] = {}
T = TypeVar("T")


def _added(items: dict[str, T], key: str, item: T) -> tuple[dict[str, T], T]:
    """``items`` with ``item`` under ``key``: the lead's own dict, made on its first item (``_NONE`` stays empty)."""
    own = {} if items is _NONE else items
    own[key] = item
    return own, item


class Touch(NamedTuple):
    """A call or an outbound activity of a lead."""

    at: float
    channel: str
    rep: str
    team: str
    connected: bool
    event_id: str


@dataclass(slots=True)
class Email:
    """A sent email: its send (``at`` is None until the ``email.sent`` is seen) and each engagement kind seen."""

    at: float | None = None
    rep: str = ""
    team: str = ""
    personalized: bool = False
    opened: bool = False
    clicked: bool = False
    replied: bool = False
    bounced: bool = False

    def sent(self, at: float, rep: str, team: str, personalized: bool) -> None:
        self.at, self.rep, self.team, self.personalized = at, intern(rep), intern(team), personalized


@dataclass(slots=True)
class Meeting:
    """A booked meeting (``at`` is None until the booking is seen): by whom, its kind, whether it was held."""

    at: float | None = None
    rep: str = ""
    team: str = ""
    kind: str | None = None
    held: bool = False

    def booked(self, at: float, rep: str, team: str, kind: str | None) -> None:
        self.at, self.rep, self.team, self.kind = at, intern(rep), intern(team), interned(kind)


@dataclass(slots=True)
class Lead:
    """One lead's outreach: creation, conversion, win, quiet, and every touch, email and meeting."""

    wm: int = -1
    created: float | None = None
    source: str | None = None
    team: str | None = None
    converted: float | None = None
    won: float | None = None
    quiet: bool = False
    last_seen: float | None = None
    touches: tuple[Touch, ...] = ()
    emails: dict[str, Email] = field(default_factory=lambda: _NONE)
    meetings: dict[str, Meeting] = field(default_factory=lambda: _NONE)

    def email(self, email_id: str) -> Email:
        """The email, added empty if it is new."""
        found = self.emails.get(email_id)
        if found is None:
            self.emails, found = _added(self.emails, email_id, Email())
        return found

    def meeting(self, meeting_id: str) -> Meeting:
        """The meeting, added empty if it is new."""
        found = self.meetings.get(meeting_id)
        if found is None:
            self.meetings, found = _added(self.meetings, meeting_id, Meeting())
        return found

    def sent_and_booked(self) -> Iterator[tuple[float, str, str]]:
        """``(at, rep, team)`` of every email sent and meeting booked (those seen by their send or booking)."""
        items: tuple[Email | Meeting, ...] = (*self.emails.values(), *self.meetings.values())
        for item in items:
            if item.at is not None:
                yield item.at, item.rep, item.team

    def add_touch(self, at: float, channel: str, rep: str, team: str, connected: bool, event_id: str) -> bool:
        """Record a touch once per event id (a redelivery past the dedup horizon changes nothing); True if new."""
        if any(existing.event_id == event_id for existing in self.touches):
            return False
        self.touches += (Touch(at, intern(channel), intern(rep), intern(team), connected, event_id),)
        return True


def last_touch(lead: Lead) -> float | None:
    """When the lead was last touched (event time), or ``None`` if never: the latest attempt's time."""
    latest: float | None = None
    for touch in lead.touches:
        if latest is None or touch.at > latest:
            latest = touch.at
    for items in (lead.emails, lead.meetings):
        for item in items.values():
            at = item.at
            if at is not None and (latest is None or at > latest):
                latest = at
    return latest


class OutreachCodec(TypedCodec[Lead]):
    """``StateCodec`` of ``Lead``: the JSON object above, both ways."""

    def index(self, name: str, lead: Lead) -> StateIndex:
        """Last seen for expiry; watched from its last touch while the lead may still go quiet."""
        watch = None if lead.converted is not None or lead.quiet else last_touch(lead)
        return lead.last_seen or 0.0, watch

    def decode(self, name: str, raw: Cell) -> Lead:
        get = raw.get
        lead = Lead(
            wm=get("wm", -1), created=get("created"), source=interned(get("source")), team=interned(get("team")),
            converted=get("converted"), won=get("won"), quiet=bool(get("quiet")), last_seen=get("last_seen"),
        )
        touches = get("touches")
        if touches:
            lead.touches = tuple(
                Touch(at, intern(channel), intern(rep), intern(team), bool(connected), event_id)
                for at, channel, rep, team, connected, event_id in touches
            )
        for email_id, item in get("emails", _NONE).items():
            email = lead.email(email_id)
            email.opened, email.clicked = bool(item.get("opened")), bool(item.get("clicked"))
            email.replied, email.bounced = bool(item.get("replied")), bool(item.get("bounced"))
            if item.get("at") is not None:
                email.sent(item["at"], item["rep"], item["team"], bool(item.get("personalized")))
        for meeting_id, item in get("meetings", _NONE).items():
            meeting = lead.meeting(meeting_id)
            meeting.held = bool(item.get("held"))
            if item.get("at") is not None:
                meeting.booked(item["at"], item["rep"], item["team"], item.get("kind"))
        return lead

    def encode(self, lead: Lead) -> Cell:
        out: dict[str, Any] = {"wm": lead.wm}  # written at every persist of a changed lead: no loops over names
        if lead.created is not None:
            out["created"] = lead.created
        if lead.source is not None:
            out["source"] = lead.source
        if lead.team is not None:
            out["team"] = lead.team
        if lead.converted is not None:
            out["converted"] = lead.converted
        if lead.won is not None:
            out["won"] = lead.won
        if lead.last_seen is not None:
            out["last_seen"] = lead.last_seen
        if lead.quiet:
            out["quiet"] = True
        if lead.touches:
            out["touches"] = [[*touch] for touch in lead.touches]
        if lead.emails:
            out["emails"] = {email_id: _encode_email(email) for email_id, email in lead.emails.items()}
        if lead.meetings:
            out["meetings"] = {meeting_id: _encode_meeting(meeting) for meeting_id, meeting in lead.meetings.items()}
        return out


def _encode_email(email: Email) -> dict[str, Any]:
    out: dict[str, Any] = (
        {} if email.at is None
        else {"at": email.at, "rep": email.rep, "team": email.team, "personalized": email.personalized}
    )
    if email.opened:
        out["opened"] = True
    if email.clicked:
        out["clicked"] = True
    if email.replied:
        out["replied"] = True
    if email.bounced:
        out["bounced"] = True
    return out


def _encode_meeting(meeting: Meeting) -> dict[str, Any]:
    out: dict[str, Any] = (
        {} if meeting.at is None else {"at": meeting.at, "rep": meeting.rep, "team": meeting.team, "kind": meeting.kind}
    )
    if meeting.held:
        out["held"] = True
    return out


OUTREACH_CODEC = OutreachCodec(Lead)
