"""The activity family in the stream: rep and team activity counts per window.

Cells (``StateStore`` prefix ``activity``) follow ``WindowedFamily``: ``{"wm", "rep": {id: counts},
"team": {id: counts}}``, and the all-time cell also ``rep_team`` (``(rep, team)``) for the
Prometheus labels. Published windows: all, day, week, month, rolling 24 h and 7 d. With ``targets``,
a rep's day, week and month partials carry ``target:<kind>`` (merged by max in Redis, which derives
``attainment:<kind>``) and its metric records a ``targets`` map.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from salespulse.families.activity.idle import IdleRule
from salespulse.families.activity.rules import activity_of, split_field, with_rollups
from salespulse.families.activity.spec import SPEC
from salespulse.families.entity_clocks import EntityClocks
from salespulse.families.keys import encode
from salespulse.models.events import Event, EventBase, RepActive
from salespulse.families.state import Cell, StateStore
from salespulse.families.fields import Number
from salespulse.families.windowed import WindowedFamily

FAMILY = SPEC.name
REDIS_PREFIX = SPEC.redis_prefix


class ActivityFamily(WindowedFamily):
    """Counts rep activities (calls by outcome, emails sent, meetings, logged activities)."""

    spec = SPEC

    def __init__(
        self, cells: StateStore[Cell], tz: ZoneInfo, retention_s: float,
        team_of_rep: dict[str, str] | None = None,
        targets: Callable[[str, str], Mapping[str, int]] | None = None,
        foreign_target_kinds: Iterable[str] = (),
        idle: IdleRule | None = None,
    ) -> None:
        """``targets``: ``(rep, "day" | "week" | "month") -> {kind: target}``; kinds in
        ``foreign_target_kinds`` belong to another family's fields and are published there."""
        super().__init__(cells, tz, retention_s)
        self.team_of_rep = team_of_rep or {}
        self.targets = targets
        self.foreign_target_kinds = frozenset(foreign_target_kinds)
        #: The ``rep_no_activity`` alert rule, when ``[alerts.rep_no_activity]`` is configured.
        self.idle = idle
        self._follow_ups: list[Event] = []

    @property
    def stores(self) -> tuple[StateStore[Any], ...]:
        """The activity cells, then the reps' idle clocks and active days."""
        return (self.cells,) if self.idle is None else (self.cells, self.idle.clocks.store)

    @property
    def alert_sources(self) -> tuple[EntityClocks, ...]:
        """The ``rep_no_activity`` clocks, for the engine's alert clock (none unless configured)."""
        return () if self.idle is None else (self.idle.clocks,)

    def on_loaded(self, partition: int) -> None:
        if self.idle is not None:
            self.idle.clocks.on_loaded(partition)

    def drop_partition(self, partition: int) -> None:
        super().drop_partition(partition)
        if self.idle is not None:
            self.idle.clocks.drop_partition(partition)

    def take_follow_ups(self) -> list[Event]:
        taken, self._follow_ups = self._follow_ups, []
        return taken

    def owns_target(self, kind: str) -> bool:
        return kind not in self.foreign_target_kinds

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool:
        """Count one admitted event; True if it was an activity."""
        if isinstance(event, RepActive):
            if self.idle is not None:
                self.idle.active(partition, event)
            return self.idle is not None
        activity = activity_of(event, self.team_of_rep)
        if activity is None:
            return False
        if self.idle is not None:
            follow_up = self.idle.follow_up(event)
            if follow_up is not None:
                self._follow_ups.append(follow_up)
        rep, team, field = activity.rep, activity.team, activity.field
        one = {field: 1}
        deltas = [("rep", rep, one), ("team", team, one), ("rep_team", encode((rep, team)), one)]
        self.add(partition, offset, event.occurred_at.timestamp(), now, deltas)
        return True

    def published_fields(self, fields: Mapping[str, Number]) -> dict[str, Number]:
        return with_rollups(fields)

    def counter_totals(
        self, owned: Iterable[int], malformed: Callable[[str], None] = lambda ident: None
    ) -> dict[tuple[str, str, str, str], int]:
        """All-time counts per (rep, team, kind, outcome), summed over owned partitions; an id that does not
        decode is left out and passed to ``malformed``."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for (rep, team), fields in self.all_time_keyed(owned, "rep_team", malformed).items():
            for field, n in fields.items():
                key = (rep, team, *split_field(field))
                totals[key] = totals.get(key, 0) + int(n)
        return totals
