"""One lead as the lead-response family keeps it: typed and slotted in memory, JSON in the changelog.

Times are epoch seconds. In the changelog (``RecordLog`` records of the ``leads`` store) a lead is the
JSON object it always was, so records written before these types load unchanged::

    {"wm", "created", "deadline", "hours_team", "live", "touch", "toucher", "owners": [[at, rep]],
     "owner", "touch_owner", "team", "team_from", "source", "mql", "response_s",
     "alert", "fired_at", "resolved_at",                       (the SLA breach: firing | resolved)
     "warning", "warned_at", "warning_resolved_at", "warn_at",  (the pre-breach warning)
     "as_fired": [rep, team, source], "published": [published key]}

A key is written only when set. In memory each alert rule's statuses are one ``Episode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from sys import intern
from typing import Any

from salespulse.families.state import Cell, StateIndex, TypedCodec, interned

SLA_RULE = "lead_response_sla"
WARNING_RULE = "lead_response_warning"
#: Each rule's (status, fired at, resolved at) keys in the JSON form.
_EPISODE_KEYS: dict[str, tuple[str, str, str]] = {
    SLA_RULE: ("alert", "fired_at", "resolved_at"),
    WARNING_RULE: ("warning", "warned_at", "warning_resolved_at"),
}
_PLAIN = (
    "created", "deadline", "hours_team", "touch", "toucher", "owner", "touch_owner", "team", "team_from",
    "source", "mql", "response_s", "warn_at",
)
_plain = attrgetter(*_PLAIN)  # read in one call at every persist of a changed lead
_TEXT = ("hours_team", "toucher", "owner", "touch_owner", "team", "team_from", "source")



@dataclass(slots=True)
class Episode:
    """One alert rule's run on a lead: fired, and resolved once touched (or taken over by the breach)."""

    fired_at: float
    resolved_at: float | None = None

    @property
    def status(self) -> str:
        return "firing" if self.resolved_at is None else "resolved"


@dataclass(slots=True)
class Lead:
    """A lead's creation, deadline, owners, first touch, response and alerts."""

    wm: int = -1
    created: float | None = None  # the earliest ``lead.created``
    deadline: float | None = None  # first-touch deadline (creation + SLA in the team's business hours)
    hours_team: str | None = None  # whose business hours set the deadline
    live: bool = False  # created in time to alert on (backfills are measured, never alerted)
    touch: float | None = None  # the first outbound touch
    toucher: str | None = None
    owners: tuple[tuple[float, str], ...] = ()  # assignments (at, rep), sorted
    owner: str | None = None  # the current owner
    touch_owner: str | None = None  # the owner at the first touch
    team: str | None = None
    team_from: str | None = None  # where ``team`` came from: created, assigned or touch
    source: str | None = None
    mql: bool | None = None
    response_s: float | None = None  # business seconds from creation to the first touch
    warn_at: float | None = None  # pre-breach warning instant (a share of the SLA in business time); None: off
    breach: Episode | None = None  # the SLA breach (``lead_response_sla``)
    warning: Episode | None = None  # the pre-breach warning (``lead_response_warning``)
    as_fired: tuple[str, str, str] | None = None  # (rep, team, source) at the first alert: its labels never change
    published: tuple[str, ...] = ()  # alert statuses already published (``outputs.alerts.published_key``)

    def episode(self, rule: str) -> Episode | None:
        return self.breach if rule == SLA_RULE else self.warning

    def set_episode(self, rule: str, episode: Episode) -> None:
        if rule == SLA_RULE:
            self.breach = episode
        else:
            self.warning = episode

    def assign(self, at: float, rep: str) -> None:
        """Record an assignment (once), keeping them sorted."""
        if (at, rep) not in self.owners:
            self.owners = tuple(sorted((*self.owners, (at, intern(rep)))))


class LeadCodec(TypedCodec[Lead]):
    """``StateCodec`` of ``Lead``: the JSON object above, both ways."""

    def index(self, name: str, lead: Lead) -> StateIndex:
        """Its newest fact (creation, first touch, an assignment) for expiry; watched (from its creation) while
        it awaits a first touch or has an alert status: the family's deadlines and alerts are rebuilt from those."""
        newest = max(lead.created or 0.0, lead.touch or 0.0, *(at for at, _rep in lead.owners))
        awaiting = lead.created is not None and lead.touch is None
        watched = awaiting or lead.breach is not None or lead.warning is not None
        return newest, (lead.created or 0.0) if watched else None

    def decode(self, name: str, raw: Cell) -> Lead:
        get = raw.get
        lead = Lead(
            wm=get("wm", -1), created=get("created"), deadline=get("deadline"), live=bool(get("live")),
            touch=get("touch"), mql=get("mql"), response_s=get("response_s"), warn_at=get("warn_at"),
            owners=tuple((at, intern(rep)) for at, rep in get("owners") or ()),
            published=tuple(get("published") or ()),
        )
        for key in _TEXT:
            setattr(lead, key, interned(get(key)))
        as_fired = get("as_fired")
        if as_fired is not None:
            lead.as_fired = (as_fired[0], as_fired[1], as_fired[2])
        for rule, (status, fired_at, resolved_at) in _EPISODE_KEYS.items():
            if get(status) is not None:
                lead.set_episode(rule, Episode(raw[fired_at], raw[resolved_at] if raw[status] == "resolved" else None))
        return lead

    def encode(self, lead: Lead) -> Cell:
        out: dict[str, Any] = {"wm": lead.wm}
        for key, value in zip(_PLAIN, _plain(lead)):
            if value is not None:
                out[key] = value
        if lead.live:
            out["live"] = True
        if lead.owners:
            out["owners"] = [list(owner) for owner in lead.owners]
        for rule, (status, fired_at, resolved_at) in _EPISODE_KEYS.items():
            episode = lead.episode(rule)
            if episode is not None:
                out[status], out[fired_at] = episode.status, episode.fired_at
                if episode.resolved_at is not None:
                    out[resolved_at] = episode.resolved_at
        if lead.as_fired is not None:
            out["as_fired"] = list(lead.as_fired)
        if lead.published:
            out["published"] = list(lead.published)
        return out


LEAD_CODEC = LeadCodec(Lead)
