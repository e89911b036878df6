"""Engagement: email engagement, contact rate by channel, follow-up depth and activity ratios, per lead.

Everything here is a pure function of one lead's state (``Lead``, ``families.engagement.state``, kept by
``salespulse.families.engagement.family``), so events arriving in any order are applied as
``contribution(new) - contribution(old)``:

- **Email engagement** (in the window of the email's *send*, credited to the sending rep and team):
  ``emails_sent``; ``emails_opened`` / ``emails_clicked`` / ``emails_replied`` / ``emails_bounced``
  count each sent email once per kind however often it was opened; ``emails_personalized`` /
  ``emails_generic`` (``personalized`` true / false or absent). An engagement that arrives before
  its ``email.sent`` waits in the lead state and counts once the send is known.
- **Contact rate by channel** (window of the attempt): ``attempts:<channel>`` and
  ``connected:<channel>``: a call with outcome ``connected``; an email that got a reply; a booked
  meeting that was held. ``social`` (social-media kinds of ``activity.logged``) and ``other``
  (other outbound activities) have attempts only: no event says they were answered.
- **Each channel's later conversion to won** (window of the lead's first connected attempt on the
  channel, credited to that attempt's rep): ``reached:<channel>`` leads reached on it, ``won:<channel>``
  of those, leads with a deal won (``lead.deal_closed`` outcome ``won``) at or after that contact.
- **Follow-up depth**: a lead ends when it converts (``lead.converted``; window of the conversion) or
  goes quiet (touched, not converted, and its partition's event time passed the last touch by the
  quiet period; window of the last touch). ``leads_converted`` / ``touches_to_convert`` (outbound
  touches up to the conversion) and ``leads_quiet`` / ``touches_before_quiet``, credited to the rep
  and team of the last counted touch.
- **Activity ratios**: per source, ``leads`` created and ``leads_first_meeting`` that booked a first
  meeting (window of creation); per rep, ``outreach_leads`` (window of the first outbound touch)
  and ``outreach_first_meeting``; ``first_meetings`` (window of the first meeting) and
  ``first_meeting_next_step`` (a later meeting booked, or the lead converted, after it).
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Literal

from salespulse.families.engagement.state import Lead, Meeting, last_touch as last_touch
from salespulse.families.fields import Number
from salespulse.families.keys import encode

UNASSIGNED = "unassigned"
UNKNOWN_SOURCE = "unknown"
CHANNELS: tuple[str, ...] = ("call", "email", "meeting", "social", "other")
#: Channels with a "connected" signal (and hence a contact rate and a later conversion).
CONNECTABLE: tuple[str, ...] = ("call", "email", "meeting")
EngagementKind = Literal["opened", "clicked", "replied", "bounced"]
ENGAGEMENT_KINDS: tuple[EngagementKind, ...] = ("opened", "clicked", "replied", "bounced")
#: ``activity.logged`` kinds (normalised) that are the ``social`` channel.
_SOCIAL = re.compile(r"^(linkedin|social|twitter|x_|facebook|instagram|whatsapp|telegram|wechat)")
_KIND_CHARS = re.compile(r"[^a-z0-9_]+")

Contribution = dict[tuple[float, str, str, str], Number]  # (instant, scope, id, field) -> value

def channel_of_activity(kind: str, outbound: bool | None, outbound_kinds: frozenset[str] = frozenset()) -> str | None:
    """The channel of an ``activity.logged``: ``social`` for social-media kinds, ``other`` for other
    outbound activities (``outbound`` or a configured outbound kind), ``None`` if it is not a touch."""
    normalised = _KIND_CHARS.sub("_", kind.strip().lower()).strip("_")
    if _SOCIAL.match(normalised):
        return "social"
    if outbound or kind.strip().lower() in outbound_kinds:
        return "other"
    return None


#: Field names by channel or kind, built once (the contribution is computed for every changed lead).
_EMAIL_KIND_FIELDS: tuple[str, ...] = tuple(f"emails_{kind}" for kind in ENGAGEMENT_KINDS)
_email_kinds = attrgetter(*ENGAGEMENT_KINDS)  # an email's flags, in that order, in one call
_ATTEMPT_FIELDS = {c: f"attempts:{c}" for c in CHANNELS}
_CONNECTED_FIELDS = {c: f"connected:{c}" for c in CONNECTABLE}
_REACHED_FIELDS = {c: f"reached:{c}" for c in CONNECTABLE}
_WON_FIELDS = {c: f"won:{c}" for c in CONNECTABLE}


def attempts(lead: Lead) -> list[tuple[float, str, str, str, bool, str]]:
    """Every outbound attempt with a known time: ``(at, channel, rep, team, connected, id)``, sorted."""
    out: list[tuple[float, str, str, str, bool, str]] = list(lead.touches)
    for email_id, email in lead.emails.items():
        if email.at is not None:
            out.append((email.at, "email", email.rep, email.team, email.replied, email_id))
    for meeting_id, meeting in lead.meetings.items():
        if meeting.at is not None:
            out.append((meeting.at, "meeting", meeting.rep, meeting.team, meeting.held, meeting_id))
    out.sort()
    return out


def first_meeting(lead: Lead) -> tuple[float, str, Meeting] | None:
    """The earliest booked meeting of kind ``first`` (or without a kind): ``(at, id, meeting)``."""
    found: tuple[float, str, Meeting] | None = None
    for meeting_id, meeting in lead.meetings.items():
        at = meeting.at
        if at is not None and meeting.kind in (None, "first"):
            if found is None or (at, meeting_id) < (found[0], found[1]):
                found = (at, meeting_id, meeting)
    return found


def contribution(lead: Lead) -> Contribution:
    """A lead's additive fields per ``(instant, scope, id, field)``."""
    out: Contribution = {}
    get = out.get

    def credit(at: float, rep: str, team: str, field: str, value: Number = 1) -> None:
        key = (at, "rep", rep, field)
        out[key] = get(key, 0) + value
        key = (at, "team", team, field)
        out[key] = get(key, 0) + value

    for email in lead.emails.values():
        at = email.at
        if at is None:
            continue  # engagement of an email whose send is not known yet: waits for it
        rep, team = email.rep, email.team
        credit(at, rep, team, "emails_sent")
        credit(at, rep, team, "emails_personalized" if email.personalized else "emails_generic")
        pair = None
        for field, seen in zip(_EMAIL_KIND_FIELDS, _email_kinds(email)):
            if seen:
                credit(at, rep, team, field)
                if pair is None:
                    pair = encode((rep, team))
                key = (at, "rep_team", pair, field)
                out[key] = get(key, 0) + 1

    found = attempts(lead)
    reached: dict[str, tuple[float, str, str]] = {}
    for at, channel, rep, team, connected, _ident in found:
        credit(at, rep, team, _ATTEMPT_FIELDS.get(channel) or f"attempts:{channel}")
        if connected and channel in _CONNECTED_FIELDS:
            credit(at, rep, team, _CONNECTED_FIELDS[channel])
            if channel not in reached:
                reached[channel] = (at, rep, team)
    won = lead.won
    for channel, (at, rep, team) in reached.items():
        credit(at, rep, team, _REACHED_FIELDS[channel])
        if won is not None and won >= at:
            credit(at, rep, team, _WON_FIELDS[channel])

    converted = lead.converted
    if converted is not None:
        count = 0
        rep, team = UNASSIGNED, lead.team or UNASSIGNED
        for attempt in found:  # sorted: the last one at or before the conversion is the credited touch
            if attempt[0] > converted:
                break
            count += 1
            rep, team = attempt[2], attempt[3]
        credit(converted, rep, team, "leads_converted")
        credit(converted, rep, team, "touches_to_convert", count)
    elif lead.quiet and found:
        at, _channel, rep, team, _connected, _ident = found[-1]
        credit(at, rep, team, "leads_quiet")
        credit(at, rep, team, "touches_before_quiet", len(found))

    meeting = first_meeting(lead)
    created = lead.created
    if created is not None:
        source = lead.source or UNKNOWN_SOURCE
        out[(created, "source", source, "leads")] = 1
        if meeting is not None:
            out[(created, "source", source, "leads_first_meeting")] = 1
    if found:
        at, _channel, rep, team, _connected, _ident = found[0]
        credit(at, rep, team, "outreach_leads")
        if meeting is not None and meeting[0] >= at:
            credit(at, rep, team, "outreach_first_meeting")
    if meeting is not None:
        at, meeting_id, first = meeting
        credit(at, first.rep, first.team, "first_meetings")
        later = any(
            other_id != meeting_id and other.at is not None and other.at > at
            for other_id, other in lead.meetings.items()
        )
        if later or (converted is not None and converted >= at):
            credit(at, first.rep, first.team, "first_meeting_next_step")
    return out


def contribution_change(old: Contribution, new: Contribution) -> dict[float, list[tuple[str, str, dict[str, Number]]]]:
    """``new - old`` as deltas per instant: ``{instant: [(scope, id, {field: change})]}``, unchanged left out."""
    grouped: dict[float, dict[tuple[str, str], dict[str, Number]]] = {}
    get_old = old.get
    for key, value in new.items():
        change = value - get_old(key, 0)
        if change:
            at, scope, ident, field = key
            grouped.setdefault(at, {}).setdefault((scope, ident), {})[field] = change
    for key, value in old.items():
        if value and key not in new:
            at, scope, ident, field = key
            grouped.setdefault(at, {}).setdefault((scope, ident), {})[field] = -value
    return {at: [(scope, ident, fields) for (scope, ident), fields in by_id.items()] for at, by_id in grouped.items()}


def batch_recompute(leads: list[Lead]) -> dict[tuple[str, str], dict[str, Number]]:
    """Reference: all-time additive fields per (scope, id) over final lead states (for tests)."""
    totals: dict[tuple[str, str], dict[str, Number]] = {}
    for lead in leads:
        for (_at, scope, ident, field), value in contribution(lead).items():
            fields = totals.setdefault((scope, ident), {})
            fields[field] = fields.get(field, 0) + value
    return totals
