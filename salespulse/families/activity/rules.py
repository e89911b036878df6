"""Activity counting: which events are rep activities, and how they are counted per rep and team.

``activities_total`` counts what reps do: ``kind`` is ``call``, ``email_sent``, ``meeting_booked``,
``meeting_held`` or the (normalised) ``kind`` of an ``activity.logged``; ``outcome`` is a call's
outcome and ``none`` otherwise. An unknown rep or team is ``unassigned``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from salespulse.families.fields import Number
from salespulse.models.events import ActivityLogged, CallLogged, EmailSent, EventBase, MeetingBooked, MeetingHeld

UNASSIGNED = "unassigned"
NO_OUTCOME = "none"
_KIND_CHARS = re.compile(r"[^a-z0-9_]+")


class Activity(NamedTuple):
    """One counted rep activity."""

    rep: str
    team: str
    kind: str
    outcome: str

    @property
    def field(self) -> str:
        """The count's field name: ``kind`` or, for outcomes, ``kind:outcome``."""
        return self.kind if self.outcome == NO_OUTCOME else f"{self.kind}:{self.outcome}"


#: Field names the counters use themselves; a logged activity of such a kind is counted as ``logged_<kind>``.
RESERVED_KINDS = frozenset({"total", "call", "email_sent", "meeting_booked", "meeting_held"})


def normalise_kind(kind: str) -> str:
    """A free-text activity kind as a safe label value: lower case, ``[a-z0-9_]``, at most 40 chars."""
    normalised = _KIND_CHARS.sub("_", kind.strip().lower()).strip("_")[:40] or "other"
    return f"logged_{normalised}" if normalised in RESERVED_KINDS else normalised


def activity_of(event: EventBase, team_of_rep: Mapping[str, str] | None = None) -> Activity | None:
    """The activity an event counts as, or ``None`` if it is not a rep activity."""
    if isinstance(event, CallLogged):
        kind, outcome = "call", event.outcome.value
    elif isinstance(event, EmailSent):
        kind, outcome = "email_sent", NO_OUTCOME
    elif isinstance(event, MeetingBooked):
        kind, outcome = "meeting_booked", NO_OUTCOME
    elif isinstance(event, MeetingHeld):
        kind, outcome = "meeting_held", NO_OUTCOME
    elif isinstance(event, ActivityLogged):
        kind, outcome = normalise_kind(event.kind), NO_OUTCOME
    else:
        return None
    rep = event.rep_id or UNASSIGNED
    team = event.team or (team_of_rep or {}).get(rep) or UNASSIGNED
    return Activity(rep, team, kind, outcome)


def split_field(field: str) -> tuple[str, str]:
    """``(kind, outcome)`` of a count field name (the inverse of ``Activity.field``)."""
    kind, _, outcome = field.partition(":")
    return kind, outcome or NO_OUTCOME


def with_rollups(counts: Mapping[str, Number]) -> dict[str, Number]:
    """A count hash as published: every field, each kind's total over outcomes, and ``total``."""
    out: dict[str, Number] = dict(counts)
    for field, n in counts.items():
        if ":" in field:  # only outcome fields roll up (split_field, without splitting the others)
            kind, _, outcome = field.partition(":")
            if outcome and outcome != NO_OUTCOME:
                out[kind] = out.get(kind, 0) + n
    out["total"] = sum(counts.values())
    return out


def count_activities(activities: Iterable[Activity]) -> dict[str, dict[str, int]]:
    """Batch recomputation: per rep, the count of each field (reference for the streaming path)."""
    per_rep: dict[str, dict[str, int]] = {}
    for activity in activities:
        fields = per_rep.setdefault(activity.rep, {})
        fields[activity.field] = fields.get(activity.field, 0) + 1
    return per_rep
