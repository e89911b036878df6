"""The ``rep_no_activity`` rule: a rep with no outbound activity by a local time on a business day.

A rep's activities land in the partitions of their leads, so no partition sees them all. Each partition
that counts a rep's outbound activity (a call, an email sent, a meeting booked, an outbound logged
activity) writes a ``rep.active`` follow-up keyed by the rep, once per rep and local day (again only
for an earlier time); the rep's own partition keeps the days the rep was active and the rep's clock.
Every business day the clock is armed for ``by`` (local time, per team) and fires then unless the rep
was active that day; it resolves at the rep's first activity of that day, or when the next day's
clock is armed. Watched reps are those of the ``[teams]`` directory (a rep the config does not name
has no team, and a rep who never acted cannot be known otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timezone

from aiokafka.partitioner import DefaultPartitioner

from salespulse.families.business_hours import BusinessHours
from salespulse.families.entity_clocks import EntityClocks, iso
from salespulse.families.outbound import is_outbound
from salespulse.models.events import (
    EventBase,
    RepActive,
    derived_event_id,
)

RULE = "rep_no_activity"
#: Days of activity a rep's record keeps (today's is what the rule needs; a few more for late events).
KEPT_DAYS = 8
_ACTIVE = "active|"


def deadline_on(hours: BusinessHours, day: date, by: time) -> float | None:
    """``by`` in the team's zone on ``day``, or None when ``day`` is not a business day."""
    if not hours.is_always_open and not hours.open_intervals(day):
        return None
    return datetime.combine(day, by, tzinfo=hours.tz).timestamp()


class IdleRule:
    """Writes ``rep.active`` follow-ups, records active days in the rep's partition, and keeps the reps' clocks."""

    def __init__(
        self, clocks: EntityClocks, roster: Mapping[str, str], by_for: Callable[[str], time | None],
        hours_of: Callable[[str], BusinessHours], partitions: int, outbound_kinds: frozenset[str] = frozenset(),
    ) -> None:
        self.clocks = clocks
        self.by_for = by_for
        self.hours_of = hours_of
        self.outbound_kinds = outbound_kinds
        self.roster = dict(roster)
        partitioner = DefaultPartitioner()
        every = list(range(partitions))
        #: Per partition: the watched reps whose ``rep.active`` events (keyed by rep) land there, with their team.
        self.reps: dict[int, dict[str, str]] = {}
        for rep, team in roster.items():
            if by_for(team) is not None:
                self.reps.setdefault(partitioner(rep.encode(), every, every), {})[rep] = team
        #: (rep, local day) -> the earliest activity time already written as ``rep.active`` by this worker.
        self._written: dict[tuple[str, str], float] = {}
        #: Per partition: when its reps' clocks were last armed (once a second is plenty).
        self._armed_at: dict[int, float] = {}
        clocks.before_due = self.arm_due

    # -- in the partition of the lead ------------------------------------------------------------------

    def follow_up(self, event: EventBase) -> RepActive | None:
        """The ``rep.active`` to write for a watched rep's outbound activity, unless an earlier one of that day
        was written."""
        rep = event.rep_id
        team = self.roster.get(rep) if rep is not None else None
        if rep is None or team is None or not is_outbound(event, self.outbound_kinds):
            return None
        at = event.occurred_at.timestamp()
        day = self._day(team, at)
        key = (rep, day)
        if self._written.get(key, float("inf")) <= at:
            return None
        if len(self._written) > 100_000:
            self._written.clear()  # only saves repeats: the rep's partition keeps the earliest anyway
        self._written[key] = at
        return RepActive(event_id=derived_event_id("rep-active", rep, day, event.event_id),
                         type="rep.active", occurred_at=event.occurred_at, rep_id=rep)

    # -- in the partition of the rep ------------------------------------------------------------------

    def active(self, partition: int, event: RepActive) -> None:
        """Record the rep's activity of that day; it resolves (or disarms) that day's clock."""
        rep, at = event.rep_id, event.occurred_at.timestamp()
        team = self.reps.get(partition, {}).get(rep)
        if team is None:
            return
        day = self._day(team, at)
        record = self.clocks.store.cell(partition, _ACTIVE + rep)
        days: dict[str, float] = record.setdefault("days", {})
        if day in days and days[day] <= at:
            return
        days[day] = at
        for old in sorted(days)[:-KEPT_DAYS]:
            del days[old]
        self.clocks.store.touch(partition, _ACTIVE + rep)
        cell = self.clocks.store.get(partition, rep)
        if cell is not None and cell.get("day") == day and cell.get("ep") is not None:
            self.clocks.end(partition, rep, at)

    def arm_due(self, partition: int, now: float) -> None:
        """Arm today's clock of every watched rep of the partition not active today and not armed for today."""
        if now - self._armed_at.get(partition, float("-inf")) < 1.0:
            return
        self._armed_at[partition] = now
        changed: set[str] = set()
        for rep, team in self.reps.get(partition, {}).items():
            by = self.by_for(team)
            hours = self.hours_of(team)
            today = datetime.fromtimestamp(now, timezone.utc).astimezone(hours.tz).date()
            deadline = deadline_on(hours, today, by) if by is not None else None
            if deadline is None:
                continue
            day = today.isoformat()
            cell = self.clocks.store.get(partition, rep)
            record = self.clocks.store.get(partition, _ACTIVE + rep)
            if (cell is not None and cell.get("day") == day) or (record is not None and day in record.get("days", {})):
                continue
            start = datetime.combine(today, time(0), tzinfo=hours.tz).timestamp()
            self.clocks.arm(partition, rep, iso(start), start, deadline, {"rep_id": rep, "team": team, "source": "activity"}, now,
                            in_batch=False)
            self.clocks.store.cell(partition, rep)["day"] = day  # armed for today, even once ended by an activity
            changed.add(rep)
        if changed:
            self.clocks.store.write_many(partition, changed)

    @staticmethod
    def _local_day(hours: BusinessHours, at: float) -> str:
        return datetime.fromtimestamp(at, timezone.utc).astimezone(hours.tz).date().isoformat()

    def _day(self, team: str, at: float) -> str:
        return self._local_day(self.hours_of(team), at)
