"""The activity family in the stream: rep and team activity counts per window.

Cells (``StateStore`` prefix ``activity``) follow ``WindowedFamily``: ``{"wm", "rep": {id: counts},
"team": {id: counts}}``, and the all-time cell also ``rep_team`` (``(rep, team)``) for the
Prometheus labels. Published windows: all, day, week, month, rolling 24 h and 7 d. With ``targets``,
a rep's day, week and month partials carry ``target:<kind>`` (merged by max in Redis, which derives
``attainment:<kind>``) and its metric records a ``targets`` map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from salespulse.families.activity.rules import activity_of, split_field, with_rollups
from salespulse.families.activity.spec import SPEC
from salespulse.families.keys import encode
from salespulse.families.state import StateStore
from salespulse.families.fields import Number
from salespulse.families.windowed import WindowedFamily

FAMILY = SPEC.name
REDIS_PREFIX = SPEC.redis_prefix


class ActivityFamily(WindowedFamily):
    """Counts rep activities (calls by outcome, emails sent, meetings, logged activities)."""

    spec = SPEC

    def __init__(
        self, cells: StateStore, tz: ZoneInfo, retention_s: float,
        team_of_rep: dict[str, str] | None = None,
        targets: Callable[[str, str], Mapping[str, int]] | None = None,
        foreign_target_kinds: Iterable[str] = (),
    ) -> None:
        """``targets``: ``(rep, "day" | "week" | "month") -> {kind: target}``; kinds in
        ``foreign_target_kinds`` belong to another family's fields and are published there."""
        super().__init__(cells, tz, retention_s)
        self.team_of_rep = team_of_rep or {}
        self.targets = targets
        self.foreign_target_kinds = frozenset(foreign_target_kinds)

    def owns_target(self, kind: str) -> bool:
        return kind not in self.foreign_target_kinds

    def apply(self, partition: int, offset: int, event: object, now: float, arrived: float | None = None) -> bool:
        """Count one admitted event; True if it was an activity."""
        activity = activity_of(event, self.team_of_rep)
        if activity is None:
            return False
        rep, team, field = activity.rep, activity.team, activity.field
        one = {field: 1}
        deltas = [("rep", rep, one), ("team", team, one), ("rep_team", encode((rep, team)), one)]
        self.add(partition, offset, event.occurred_at.timestamp(), now, deltas)  # type: ignore[attr-defined]
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
