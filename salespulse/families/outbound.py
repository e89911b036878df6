"""Which events are a rep's outbound touch of a lead (shared by the lead-response and activity rules)."""

from __future__ import annotations

from salespulse.models.events import ActivityLogged, CallLogged, EmailSent, EventBase, MeetingBooked


def is_outbound(event: EventBase, outbound_kinds: frozenset[str] = frozenset()) -> bool:
    """True for a call, a sent email, a booked meeting, or an activity marked (or configured) outbound."""
    if isinstance(event, (CallLogged, EmailSent, MeetingBooked)):
        return True
    if isinstance(event, ActivityLogged):
        return bool(event.outbound) or event.kind.strip().lower() in outbound_kinds
    return False
