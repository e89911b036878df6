"""The read side of a windowed family: totals per scope for Prometheus and the console, and the collector.

``WindowedFamily`` inherits it; the cells it reads are the family's ``cells`` store (see ``windowed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo


from salespulse.families import keys
from salespulse.families.fields import Number, add_fields
from salespulse.families.keys import Key
from salespulse.families.spec import FamilySpec
from salespulse.families.state import Cell, StateStore
from salespulse.families.windows import ALL_TIME, calendar_buckets
from salespulse.outputs.series import SpecCollector, render_live


def _ignore(ident: str) -> None:
    """What an undecodable id costs by default: nothing (a collector counts it)."""


def keyed(
    by_id: Mapping[str, dict[str, Number]], parts: Callable[[str], Key], malformed: Callable[[str], None]
) -> dict[Key, dict[str, Number]]:
    """``by_id`` keyed by structured ids; an id ``parts`` cannot decode is left out and passed to ``malformed``."""
    out: dict[Key, dict[str, Number]] = {}
    for ident, fields in by_id.items():
        try:
            out[parts(ident)] = fields
        except keys.MalformedId:
            malformed(ident)
    return out


class WindowQueries:
    """Totals of owned partitions per id of one scope (all time, or the calendar window holding now)."""

    name: str
    spec: FamilySpec
    cells: StateStore[Cell]
    tz: ZoneInfo
    all_time_scopes: Mapping[str, int]

    def current_window(self, owned: Iterable[int], scope: str, grain: str, now: float) -> dict[str, dict[str, Number]]:
        """Fields per id of one scope in the ``day``, ``week`` or ``month`` holding ``now`` (in the family's time
        zone), summed over owned partitions (Prometheus)."""
        day, week, month = calendar_buckets(now, self.tz)
        bucket = {"day": day, "week": week, "month": month}[grain]
        return self._window_totals(owned, f"{grain}|{bucket}", scope)

    def all_time(self, owned: Iterable[int], scope: str) -> dict[str, dict[str, Number]]:
        """All-time fields per id of one scope, summed over owned partitions (Prometheus)."""
        return self._window_totals(owned, f"all|{ALL_TIME}", scope)

    def all_time_keyed(
        self, owned: Iterable[int], scope: str, malformed: Callable[[str], None] = _ignore
    ) -> dict[Key, dict[str, Number]]:
        """All-time fields per structured id of one scope, summed over owned partitions (Prometheus); an id
        that does not decode (``MalformedId``) is left out and passed to ``malformed``."""
        return keyed(self.all_time(owned, scope), lambda ident: self.id_parts(scope, ident), malformed)

    def id_parts(self, scope: str, ident: str) -> Key:
        """The structured id of a scope's id: its parts for an all-time scope, else the id alone."""
        parts = self.all_time_scopes.get(scope)
        return (ident,) if parts is None else keys.decode(ident, parts)

    def collector(
        self,
        owned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
        skipped: Callable[[str, str], None] | None = None,
    ) -> SpecCollector:
        """The family's Prometheus collector: the spec's series, then its live series."""
        live = render_live(self.spec.live, self) if self.spec.live else None
        return SpecCollector(self.name, self.spec.series, self.all_time_keyed, owned, live, clock, skipped)

    def _window_totals(self, owned: Iterable[int], name: str, scope: str) -> dict[str, dict[str, Number]]:
        totals: dict[str, dict[str, Number]] = {}
        for partition in owned:
            cell = self.cells.get(partition, name)
            if cell is None:
                continue
            for ident, fields in cell.get(scope, {}).items():
                add_fields(totals.setdefault(ident, {}), fields)
        return totals
