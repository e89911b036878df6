"""The engagement family in the stream: per-lead outreach state, and its windowed aggregates.

Two stores, written in this order every batch (aggregates first, so a crash never keeps a lead's new
state while losing the aggregate change it caused): ``engagement`` (``WindowedFamily`` cells per rep,
team and source, plus the partition's event-time clock in the cell ``clock|-``) and the lead states
(emails, calls, meetings, activities, conversion, won, quiet) in a ``RecordLog``: one changelog
record per batch. The arithmetic is ``salespulse.metrics.engagement``.

**Going quiet, deterministically.** Each partition keeps an event-time clock: the latest
``occurred_at`` of its events, each capped at its Kafka record's timestamp (so a future-stamped event
cannot fast-forward it). After every event, leads whose last touch is ``quiet_s`` or more behind the
clock are marked quiet, at that event's offset. The clock and the marks are functions of the
partition's log, so replays and other batch splits reach the same states; a later touch revives a
quiet lead. A partition with no traffic waits for its next event. The clock cell keeps the steps of
its advances since its previous write, so a replay after a crash that wrote the clock cell but not
every other cell sees the clock as of each replayed offset, not the later value of the crashed batch
(which would mark leads quiet at other offsets than the first run did, and cells skipping those
offsets would miss the change).
"""

from __future__ import annotations

import heapq
from sys import intern
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from salespulse.families.engagement.cold import ColdRule
from salespulse.families.engagement.spec import ADDITIVE_FIELDS, SPEC
from salespulse.families.entity_clocks import EntityClocks
from salespulse.families.engagement.rules import (
    ENGAGEMENT_KINDS,
    UNASSIGNED,
    Contribution,
    EngagementKind,
    channel_of_activity,
    contribution,
    contribution_change,
    last_touch,
)
from salespulse.models.events import (
    EventBase,
    LeadEvent,
    ActivityLogged,
    CallLogged,
    CallOutcome,
    DealOutcome,
    EmailBounced,
    EmailClicked,
    EmailEngagement,
    EmailOpened,
    EmailReplied,
    EmailSent,
    LeadConverted,
    LeadCreated,
    LeadDealClosed,
    MeetingBooked,
    MeetingHeld,
)
from salespulse.families.engagement.state import Lead
from salespulse.families.state import Cell, StateStore
from salespulse.families.windowed import WindowedFamily

FAMILY = SPEC.name
REDIS_PREFIX = SPEC.redis_prefix
CLOCK_CELL = "clock|-"
#: The cell of the team each rep last acted for: ``{"reps": {rep: team}}`` (``group_of``).
TEAMS_CELL = "teams|-"
DEFAULT_QUIET_S = 14 * 86400.0
#: Leads per partition whose contribution is kept in memory (most recently changed first to stay).
CONTRIBUTION_CACHE_SIZE = 20_000
_ENGAGEMENT_TYPES: dict[type, EngagementKind] = {
    EmailOpened: "opened", EmailClicked: "clicked", EmailReplied: "replied", EmailBounced: "bounced"
}
_LEAD_TYPES = (
    LeadCreated, LeadConverted, LeadDealClosed, CallLogged, EmailSent, EmailOpened, EmailClicked, EmailReplied,
    EmailBounced, MeetingBooked, MeetingHeld, ActivityLogged,
)


def clock_as_of(clock: Mapping[str, Any], offset: int) -> float:
    """The clock cell's value as of ``offset`` (at or before its ``wm``): its last step at or before it."""
    steps = clock.get("steps")
    if steps is None:
        return float(clock.get("at", float("-inf")))  # a cell written before steps were kept
    found = float("-inf")
    for step_offset, at in steps:
        if step_offset > offset:
            break
        found = at
    return found


class EngagementFamily(WindowedFamily):
    """Email engagement, contact rates by channel, follow-up depth and activity ratios per rep, team and source."""

    spec = SPEC

    def __init__(  # the windows' store, the leads' store, then the windows' zone and retention
        self, cells: StateStore[Cell], leads: StateStore[Lead], tz: ZoneInfo, retention_s: float,
        quiet_s: float = DEFAULT_QUIET_S,
        team_of_rep: Mapping[str, str] | None = None,
        outbound_kinds: Iterable[str] = (),
        targets: Callable[[str, str], Mapping[str, int]] | None = None,
        cold: ColdRule | None = None,
    ) -> None:
        super().__init__(cells, tz, retention_s)
        #: The ``lead_going_cold`` alert rule, when ``[alerts.lead_going_cold]`` sets days for some team.
        self.cold = cold
        self.leads = leads
        # The store's own methods: no wrapper call on the hot path.
        self._lead = leads.get
        self._leads = leads.items
        self.quiet_s = quiet_s
        self.team_of_rep = dict(team_of_rep or {})
        self.outbound_kinds = frozenset(kind.strip().lower() for kind in outbound_kinds)
        self.targets = targets
        #: Per partition: heap of (last touch + quiet period, lead id) of leads that may go quiet.
        self.quiet_due: dict[int, list[tuple[float, str]]] = {}
        #: Per partition: the team each rep last acted for (the team whose rates go beside the rep's).
        self._team_seen: dict[int, dict[str, str]] = {}
        #: Per partition: lead id -> ``contribution(state)`` as last added to the cells, so that a change
        #: computes the lead's contribution once (after) instead of twice. Memory only, bounded, and
        #: always equal to the contribution of the state in ``leads``: every change of a state updates
        #: or drops its entry; a miss recomputes it from the state.
        self._contributions: dict[int, dict[str, Contribution]] = {}
        #: Per partition, while replaying offsets the clock cell already holds (after a crash that
        #: wrote it but not everything else): the clock as of the replayed offset.
        self._replay_clock: dict[int, float] = {}

    @property
    def stores(self) -> tuple[StateStore[Any], ...]:
        """Write order: aggregates (and the clock) before the lead states they were derived from, then the
        going-cold clocks."""
        return (self.cells, self.leads) if self.cold is None else (self.cells, self.leads, self.cold.clocks.store)

    @property
    def alert_sources(self) -> tuple[EntityClocks, ...]:
        """The ``lead_going_cold`` clocks, for the engine's alert clock (none unless configured)."""
        return () if self.cold is None else (self.cold.clocks,)

    def owns_target(self, kind: str) -> bool:
        """Targets of this family's additive fields (``emails_personalized`` ...) are published here."""
        return kind in ADDITIVE_FIELDS

    # -- loading -----------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        """Rebuild the quiet deadlines from the leads' index (no lead decoded) and the reps' teams from their cell."""
        quiet_s = self.quiet_s
        heap = [(watch + quiet_s, lead_id) for lead_id, _newest, watch in self.leads.indexed(partition) if watch is not None]
        heapq.heapify(heap)
        self.quiet_due[partition] = heap
        teams = self.cells.get(partition, TEAMS_CELL)
        if teams is not None:
            seen: dict[str, str] = {intern(rep): intern(team) for rep, team in teams.get("reps", {}).items()}
        else:  # state written before the cell was kept: the teams of the leads' touches
            seen = {}
            for _lead_id, lead in self._leads(partition):
                for touch in lead.touches:
                    seen[touch.rep] = touch.team
                for _at, rep, team in lead.sent_and_booked():
                    seen[rep] = team
        self._team_seen[partition] = seen
        self._contributions[partition] = {}
        self._replay_clock.pop(partition, None)
        if self.cold is not None:
            self.cold.clocks.on_loaded(partition)

    def drop_partition(self, partition: int) -> None:
        super().drop_partition(partition)
        self.quiet_due.pop(partition, None)
        self._team_seen.pop(partition, None)
        self._contributions.pop(partition, None)
        self._replay_clock.pop(partition, None)
        if self.cold is not None:
            self.cold.clocks.drop_partition(partition)

    def group_of(self, partition: int, rep: str) -> str | None:
        """The rep's team: from the ``[teams]`` directory, else the team the rep last acted for here."""
        return self.team_of_rep.get(rep) or self._team_seen.get(partition, {}).get(rep)

    def _quiet_deadline(self, lead: Lead) -> float | None:
        if lead.converted is not None or lead.quiet:
            return None
        touched = last_touch(lead)
        return None if touched is None else touched + self.quiet_s

    # -- events ------------------------------------------------------------------------------------

    def clock(self, partition: int) -> float:
        """The partition's event-time clock (epoch seconds; ``-inf`` before any event).

        While a replay re-applies offsets the stored clock already holds, the clock as of the offset
        being replayed (from the cell's ``steps``), not the later value the cell was written with.
        """
        replayed = self._replay_clock.get(partition)
        if replayed is not None:
            return replayed
        cell = self.cells.get(partition, CLOCK_CELL)
        return float("-inf") if cell is None else cell.get("at", float("-inf"))

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool:
        """Advance the partition's clock, update the lead the event concerns, then mark leads gone quiet."""
        at = event.occurred_at.timestamp()
        clock = self.cells.cell(partition, CLOCK_CELL)
        if offset > clock["wm"]:
            self._replay_clock.pop(partition, None)
            seen = min(at, arrived) if arrived is not None else at
            if seen > clock.get("at", float("-inf")):
                self._advance_clock(clock, offset, seen)
                self.cells.touch(partition, CLOCK_CELL)
        else:
            self._replay_clock[partition] = clock_as_of(clock, offset)
        changed = False
        if isinstance(event, _LEAD_TYPES):
            changed = self._update(partition, offset, event, at, now)
            if changed and self.cold is not None:
                lead = self._lead(partition, event.lead_id)
                if lead is not None:
                    self.cold.observe(partition, event.lead_id, lead, now if arrived is None else arrived)
        self._mark_quiet(partition, offset, now)
        return changed

    @staticmethod
    def _advance_clock(clock: dict[str, Any], offset: int, seen: float) -> None:
        """Set the clock to ``seen`` at ``offset``, and keep the steps a replay from the last write needs.

        ``steps`` (``[offset, at]`` of each advance) keeps this batch's advances (after the cell's
        ``wm``, the last batch that wrote it) and the last advance at or before ``wm`` (the clock as
        of the last commit), so ``clock_as_of`` can give the clock at any offset a replay starts from.
        """
        steps = clock.get("steps")
        if steps is None:  # a cell written before steps were kept: its value as of its watermark
            steps = [[clock["wm"], clock["at"]]] if "at" in clock else []
        wm = clock["wm"]
        older = 0
        while older + 1 < len(steps) and steps[older + 1][0] <= wm:
            older += 1
        if older:
            del steps[:older]
        steps.append([offset, seen])
        clock["steps"] = steps
        clock["at"] = seen

    def _update(self, partition: int, offset: int, event: LeadEvent, at: float, now: float) -> bool:
        lead_id = event.lead_id
        lead = self._lead(partition, lead_id)
        if lead is not None and offset <= lead.wm:
            return False  # the state already holds this event (replay after a crash)
        fresh = lead is None
        if lead is None:
            lead = Lead()
        elif self._changes_nothing(lead, event, at):
            return False  # the common repeats (reopened emails ...): skip the contribution arithmetic
        before = self._contribution(partition, lead_id, lead) if not fresh else {}
        before_due = self._quiet_deadline(lead)
        if not self._change(lead, event, at):
            return False
        if event.rep_id and not isinstance(event, (LeadCreated, LeadConverted)):
            team = event.team or self.team_of_rep.get(event.rep_id)
            if team:
                self._see_team(partition, event.rep_id, team)
        if fresh:
            self.leads.loaded(partition)[lead_id] = lead
        self._refresh_quiet(partition, lead_id, lead, before_due)
        self._add(partition, offset, now, before, self._remember(partition, lead_id, lead))
        self.leads.touch(partition, lead_id)
        return True

    def _see_team(self, partition: int, rep: str, team: str) -> None:
        """Remember the team a rep last acted for, in memory and in the partition's ``TEAMS_CELL``."""
        seen = self._team_seen.setdefault(partition, {})
        if seen.get(rep) != team:
            seen[intern(rep)] = intern(team)
            self.cells.cell(partition, TEAMS_CELL).setdefault("reps", {})[rep] = team
            self.cells.touch(partition, TEAMS_CELL)

    def _changes_nothing(self, lead: Lead, event: LeadEvent, at: float) -> bool:
        """True for events that certainly leave an existing lead's state as it is."""
        if isinstance(event, EmailEngagement):
            email = lead.emails.get(event.email_id)
            return email is not None and bool(getattr(email, _ENGAGEMENT_TYPES[type(event)]))
        if isinstance(event, MeetingHeld):
            meeting = lead.meetings.get(event.meeting_id)
            return meeting is not None and meeting.held
        if isinstance(event, LeadDealClosed):
            return event.outcome != DealOutcome.won or (lead.won is not None and lead.won <= at)
        if isinstance(event, LeadConverted):
            return lead.converted is not None and lead.converted <= at
        if isinstance(event, ActivityLogged):
            return channel_of_activity(event.kind, event.outbound, self.outbound_kinds) is None
        return False

    def _change(self, lead: Lead, event: LeadEvent, at: float) -> bool:
        """Fold one event into a lead's state; False if the event does not concern this family."""
        rep = event.rep_id or UNASSIGNED
        team = event.team or self.team_of_rep.get(rep) or UNASSIGNED
        if isinstance(event, LeadCreated):
            lead.created = at if lead.created is None else min(lead.created, at)
            lead.source = lead.source or (event.source and intern(event.source))
            lead.team = lead.team or (event.team and intern(event.team))
        elif isinstance(event, LeadConverted):
            lead.converted = at if lead.converted is None else min(lead.converted, at)
        elif isinstance(event, LeadDealClosed):
            if event.outcome != DealOutcome.won:
                return False
            lead.won = at if lead.won is None else min(lead.won, at)
        elif isinstance(event, CallLogged):
            connected = event.outcome == CallOutcome.connected
            if not lead.add_touch(at, "call", rep, team, connected, event.event_id):
                return False
        elif isinstance(event, ActivityLogged):
            channel = channel_of_activity(event.kind, event.outbound, self.outbound_kinds)
            if channel is None:
                return False
            if not lead.add_touch(at, channel, rep, team, False, event.event_id):
                return False
        elif isinstance(event, EmailSent):
            email = lead.email(event.email_id)
            if email.at is None or at < email.at:
                email.sent(at, rep, team, bool(event.personalized))
        elif isinstance(event, MeetingBooked):
            meeting = lead.meeting(event.meeting_id)
            if meeting.at is None or at < meeting.at:
                meeting.booked(at, rep, team, event.kind.value if event.kind else None)
        elif isinstance(event, MeetingHeld):
            meeting = lead.meeting(event.meeting_id)
            if meeting.held:
                return False
            meeting.held = True
        elif isinstance(event, EmailEngagement):
            kind = _ENGAGEMENT_TYPES[type(event)]
            email = lead.email(event.email_id)
            if getattr(email, kind):
                return False  # a repeated open (or click ...): each email counts once per kind
            setattr(email, kind, True)
        else:
            return False
        lead.last_seen = at if lead.last_seen is None else max(lead.last_seen, at)
        return True

    def _refresh_quiet(self, partition: int, lead_id: str, lead: Lead, before_due: float | None) -> None:
        """Quiet iff touched, not converted and the clock passed the last touch by the quiet period."""
        touched = last_touch(lead)
        due = touched + self.quiet_s if touched is not None and lead.converted is None else None
        if due is not None and self.clock(partition) >= due:
            lead.quiet = True
            due = None  # a quiet lead has no deadline (as _quiet_deadline says, without a second pass)
        else:
            lead.quiet = False
        if due is not None and due != before_due:
            heapq.heappush(self.quiet_due.setdefault(partition, []), (due, lead_id))

    def _mark_quiet(self, partition: int, offset: int, now: float) -> None:
        heap = self.quiet_due.get(partition)
        if not heap:
            return
        clock = self.clock(partition)
        held: list[tuple[float, str]] = []
        while heap and heap[0][0] <= clock:
            due, lead_id = heapq.heappop(heap)
            lead = self._lead(partition, lead_id)
            if lead is None or self._quiet_deadline(lead) != due:
                continue  # gone, converted, already quiet, or touched since
            if offset <= lead.wm:
                held.append((due, lead_id))  # the state already holds this offset: a later one may mark it
                continue
            before = self._contribution(partition, lead_id, lead)
            lead.quiet = True
            self._add(partition, offset, now, before, self._remember(partition, lead_id, lead))
            self.leads.touch(partition, lead_id)
        for entry in held:
            heapq.heappush(heap, entry)

    def _contribution(self, partition: int, lead_id: str, lead: Lead) -> Contribution:
        """The lead's current contribution: remembered since its last change, else computed."""
        found = self._contributions.get(partition, {}).get(lead_id)
        return contribution(lead) if found is None else found

    def _remember(self, partition: int, lead_id: str, lead: Lead) -> Contribution:
        """Compute a changed lead's contribution and keep it (the least recently changed are dropped)."""
        after = contribution(lead)
        cache = self._contributions.setdefault(partition, {})
        cache.pop(lead_id, None)  # re-inserted last: the dict's order is the order of changes
        cache[lead_id] = after
        if len(cache) > CONTRIBUTION_CACHE_SIZE:
            del cache[next(iter(cache))]
        return after

    def _add(self, partition: int, offset: int, now: float, before: Contribution, after: Contribution) -> None:
        for instant, deltas in contribution_change(before, after).items():
            self.add(partition, offset, instant, now, deltas)

    # -- outputs -----------------------------------------------------------------------------------

    def email_event_totals(
        self, owned: Iterable[int], malformed: Callable[[str], None] = lambda ident: None
    ) -> dict[tuple[str, str, str], int]:
        """All-time engaged emails per (rep, team, event) over owned partitions; an id that does not decode is
        left out and passed to ``malformed``."""
        totals: dict[tuple[str, str, str], int] = {}
        for (rep, team), fields in self.all_time_keyed(owned, "rep_team", malformed).items():
            for kind in ENGAGEMENT_KINDS:
                value = int(fields.get(f"emails_{kind}", 0))
                if value:
                    totals[(rep, team, kind)] = value
        return totals

    def expire(self, partition: int, now: float) -> int:
        """Expire window cells, and lead states with nothing newer than retention (their aggregates stay)."""
        expired = super().expire(partition, now)
        cutoff = now - self.retention_s
        stale = [lead_id for lead_id, newest, _watch in self.leads.indexed(partition) if newest < cutoff]
        if stale:
            self.leads.delete_many(partition, stale)
            cache = self._contributions.get(partition, {})
            for lead_id in stale:
                cache.pop(lead_id, None)
            if self.cold is not None:
                self.cold.clocks.forget(partition, stale)
        return expired + len(stale)

