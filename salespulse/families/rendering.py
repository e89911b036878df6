"""The publishing side of a windowed family: what changed (``dirty``, ``backlog``) rendered as absolute partials.

``WindowedFamily`` inherits it. A render takes the dirty aggregates of the owned partitions (every live
window, all time and today, and within a slow budget the others, then the republication ``backlog``) and
returns one ``Partial`` per aggregate and partition: calendar windows read from their cell, rolling
windows summed from the hour cells (completed hours cached until the hour turns).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from salespulse.families.fields import Number, add_fields
from salespulse.families.spec import FamilySpec
from salespulse.families.state import Cell, StateStore
from salespulse.families.windows import ALL_TIME, bucket_end, rolling_hour_range
from salespulse.outputs.aggregates import Partial, partial

# A dirty entry: (partition, grain, bucket, scope, id); grain "rolling" stands for all rolling spans.
Dirty = tuple[int, str, str, str, str]
#: Windows published on every flush; the others (week, month, rolling) share a budget per flush.
LIVE_GRAINS = frozenset({"all", "day"})
#: What a scope or id without fields reads as (shared, never written).
NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
#: Windows a per-rep target applies to.
TARGET_GRAINS = frozenset({"day", "week", "month"})


def publisher(spec: FamilySpec) -> Callable[[Mapping[str, Number]], dict[str, Number]]:
    """The fields a partial publishes: the declared ones only, or all but zeros, or all, as the spec says."""
    if spec.only_declared:
        declared = spec.plain_fields

        def only_declared(fields: Mapping[str, Number]) -> dict[str, Number]:
            return {name: fields[name] for name in declared if name in fields}

        return only_declared
    if spec.drop_zeros:

        def without_zeros(fields: Mapping[str, Number]) -> dict[str, Number]:
            out = dict(fields)
            if 0 in out.values():  # rare (a count back to zero after a correction): filter only then
                return {name: value for name, value in out.items() if value}
            return out

        return without_zeros
    return dict


@lru_cache(maxsize=4096)
def window_end_ts(grain: str, bucket: str, tz: ZoneInfo) -> float | None:
    """When a window ends (epoch seconds), ``None`` for all-time."""
    end = bucket_end(grain, bucket, tz)
    return None if end is None else end.timestamp()


def window_name(grain: str, bucket: str) -> str:
    """The published window name of a cell: ``all``, ``day:2026-11-22``, ``week:2026-W47`` ..."""
    return "all" if grain == "all" else f"{grain}:{bucket}"


class WindowRendering:
    """Renders a windowed family's dirty aggregates (the attributes below are ``WindowedFamily``'s)."""

    name: str
    redis_prefix: str
    cells: StateStore[Cell]
    tz: ZoneInfo
    retention_s: float
    rolling_hours: Mapping[str, int]
    beside_rates: tuple[str, ...]
    targets: Callable[[str, str], Mapping[str, int]] | None
    dirty: set[Dirty]
    backlog: set[Dirty]
    partition_wm: dict[int, int]
    staged_wm: dict[int, int]
    _rolling_base: dict[tuple[int, str, str], tuple[int, dict[int, dict[str, Number]]]]
    _hours_present: dict[int, list[int]]
    _rendering: bool

    def settle(self) -> None:
        """Bring deferred deltas into the cells (``WindowedFamily.settle``)."""

    def published_fields(self, fields: Mapping[str, Number]) -> dict[str, Number]:
        """The fields of a partial as published (``WindowedFamily.published_fields``)."""
        raise NotImplementedError

    def group_of(self, partition: int, rep: str) -> str | None:
        """The team whose rates are published beside a rep's (``WindowedFamily.group_of``)."""
        return None

    def owns_target(self, kind: str) -> bool:
        """True if targets of ``kind`` are published with this family (``WindowedFamily.owns_target``)."""
        return True

    def render(self, owned: set[int], now: float | None = None, slow_budget: int | None = None) -> list[Partial]:
        """Take the dirty aggregates of owned partitions and return them as absolute partials.

        With ``slow_budget``, every live window (all time, today) is rendered, and at most that many
        of the other dirty aggregates, then of the ``backlog`` while the budget lasts; the rest wait for
        the next flush. Under load this keeps each flush small, so the live windows reach Redis within a
        flush or two. Without it, everything dirty and the whole backlog are rendered.
        """
        self.settle()
        self._rendering = True  # cells do not change until it returns: ``_present_hours`` may be kept
        try:
            return self._render(owned, time.time() if now is None else now, slow_budget)
        finally:
            self._rendering = False
            self._hours_present = {}

    def _render(self, owned: set[int], now: float, slow_budget: int | None) -> list[Partial]:
        dirty, self.dirty = self.dirty, set()
        backlog = self.backlog
        if backlog:
            backlog.difference_update(dirty)  # rendered now as a change
        if slow_budget is None:
            dirty.update(backlog)
            backlog.clear()
        else:
            slow = [entry for entry in dirty if entry[1] not in LIVE_GRAINS]
            if len(slow) > slow_budget:
                deferred = slow[slow_budget:]
                self.dirty.update(deferred)
                dirty.difference_update(deferred)
            else:
                for _ in range(min(slow_budget - len(slow), len(backlog))):
                    dirty.add(backlog.pop())
        updated_at = datetime.fromtimestamp(now, timezone.utc).isoformat()
        partials: list[Partial] = []
        windows: dict[str, tuple[str, int]] = {}  # cell name -> (published window name, TTL): once per render
        while dirty:
            # Popped, not iterated: each entry is freed once rendered, so a render holds its partials and
            # not also every entry (fewer live objects, fewer garbage-collector passes while rendering).
            entry = dirty.pop()
            partition, grain, bucket, scope, ident = entry
            if partition not in owned:
                # Not owned now (a rebalance under way): kept dirty, published once it is owned again, or
                # forgotten by ``drop_partition`` if it is revoked. Dropping it here lost updates.
                self.dirty.add(entry)
                continue
            if grain == "rolling":
                wm = self.version(partition, self.partition_wm.get(partition, -1))
                for span, hours in self.rolling_hours.items():
                    fields = self._rolling(partition, scope, ident, hours, now)
                    partials.append(self._partial(partition, scope, ident, f"rolling:{span}", fields, wm, 0, updated_at))
                continue
            name = f"{grain}|{bucket}"
            cell = self.cells.get(partition, name)
            if cell is None:
                continue
            fields = cell.get(scope, NO_FIELDS).get(ident, NO_FIELDS)
            window = windows.get(name)
            if window is None:
                end = window_end_ts(grain, bucket, self.tz)
                ttl = 0 if end is None else max(60, int(end + self.retention_s - now))
                window = windows[name] = (window_name(grain, bucket), ttl)
            wm = self.version(partition, cell["wm"])
            partials.append(self._partial(partition, scope, ident, window[0], fields, wm, window[1], updated_at))
        if self.beside_rates:
            self._fill_team_counts(partials, now)
        return partials

    def version(self, partition: int, persisted: int) -> int:
        """The watermark a partial of ``partition`` is published with: its persisted one, or the offset applied
        in memory since, when higher (see ``staged_wm``)."""
        return max(persisted, self.staged_wm.get(partition, -1))

    def _fill_team_counts(self, partials: list[Partial], now: float) -> None:
        """Team fields beside each rep record (``group_key`` set): from the team partials of this render (a
        rep's change is its team's too, so usually there), else read from the cells."""
        rendered: dict[int, dict[str, dict[str, Number]]] = {}
        for p in partials:
            if p.record["scope"] == "team":
                rendered.setdefault(p.partition, {})[p.redis_key] = p.record["counts"]
        for rep in partials:
            if rep.group_key is None:
                continue
            record = rep.record
            counts = rendered.get(rep.partition, {}).get(rep.group_key)
            if counts is None:
                counts = self.published_fields(self._fields_in(rep.partition, record["window"], "team", record["team"], now))
            record["team_counts"] = counts

    def _fields_in(self, partition: int, window: str, scope: str, ident: str, now: float) -> Mapping[str, Number]:
        """The raw fields of a scope id in a published window (``all``, ``day:2026-11-22``, ``rolling:7d`` ...)."""
        grain, _, bucket = window.partition(":")
        if grain == "rolling":
            return self._rolling(partition, scope, ident, self.rolling_hours[bucket], now)
        cell = self.cells.get(partition, f"{grain}|{bucket or ALL_TIME}")
        return NO_FIELDS if cell is None else cell.get(scope, NO_FIELDS).get(ident, NO_FIELDS)

    def _rolling(self, partition: int, scope: str, ident: str, hours: int, now: float) -> dict[str, Number]:
        # Sum of the completed hours, cached until the hour turns or a late event lands in one of
        # them; plus the current hour's cell, which changes with every event.
        span_hours = rolling_hour_range(hours, now)
        current = span_hours[-1]
        key = (partition, scope, ident)
        cached = self._rolling_base.get(key)
        if cached is None or cached[0] != current:
            cached = self._rolling_base[key] = (current, {})
        base = cached[1].get(hours)
        if base is None:
            base = cached[1][hours] = {}
            # Only the hours that have a cell (a span may be 720 hours, most of them empty), in
            # ascending order as the span's range: the same additions in the same order.
            present = self._present_hours(partition)
            for hour in present[bisect_left(present, span_hours[0]) : bisect_left(present, current)]:
                cell = self.cells.get(partition, f"hour|{hour}")
                if cell is not None:
                    fields = cell.get(scope, NO_FIELDS).get(ident)
                    if fields:
                        add_fields(base, fields)
        total = dict(base)
        now_cell: Cell | None = self.cells.get(partition, f"hour|{current}")
        if now_cell is not None:
            fields = now_cell.get(scope, NO_FIELDS).get(ident)
            if fields:
                add_fields(total, fields)
        return total

    def _present_hours(self, partition: int) -> list[int]:
        """The hours of a partition that have a cell, ascending; listed once per render (cells do not
        change while rendering), recomputed on each call outside ``render``."""
        found = self._hours_present.get(partition)
        if found is None:
            found = sorted(int(name[5:]) for name, _cell in self.cells.items(partition) if name.startswith("hour|"))
            if self._rendering:
                self._hours_present[partition] = found
        return found

    def _partial(
        self,
        partition: int,
        scope: str,
        ident: str,
        window: str,
        raw: Mapping[str, Number],
        wm: int,
        ttl: int,
        updated_at: str,
    ) -> Partial:
        """One partial; a rep's, in a family with ``beside_rates``, names its team (its team's fields,
        ``team_counts``, are filled in by ``_fill_team_counts`` once the render's partials are known)."""
        fields = self.published_fields(raw)
        wanted = None
        team = None
        if scope == "rep":
            if self.targets is not None and window.partition(":")[0] in TARGET_GRAINS:
                wanted = {k: v for k, v in self.targets(ident, window.partition(":")[0]).items() if self.owns_target(k)}
            if self.beside_rates:
                team = self.group_of(partition, ident)
        return partial(
            self.name, self.redis_prefix, scope, ident, window, partition, wm, fields, ttl, updated_at, wanted, team
        )
