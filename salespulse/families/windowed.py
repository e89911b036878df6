"""The shared shape of windowed metric families: numeric fields per scope id, per event-time window.

A family turns each admitted event into *deltas* ``(scope, id, {field: change})`` at an instant (usually
the event's ``occurred_at``; for lead response, the lead's creation). ``add`` applies them to every
window cell of that instant: ``all|-``, ``hour|<utc hour>`` (for rolling spans), ``day``, ``week`` and
``month`` in the configured time zone. Each cell skips offsets it already holds (``wm``), so replays
are idempotent. What changed is marked for publication; ``rendering.WindowRendering`` renders it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from salespulse.families.fields import Number, add_fields
from salespulse.families.queries import WindowQueries
from salespulse.families.rendering import NO_FIELDS, Dirty, WindowRendering, publisher, window_end_ts
from salespulse.families.spec import FamilySpec
from salespulse.families.state import Cell, StateStore
from salespulse.models.events import Event, EventBase
from salespulse.families.windows import ALL_TIME, calendar_buckets, hour_bucket
from salespulse.outputs.derived import Derived

Delta = tuple[str, str, Mapping[str, Number]]  # (scope, id, {field: change})
WindowSpec = tuple[str, str, str, float | None, int | None]  # (grain, bucket, cell name, end epoch, UTC hour)


class WindowedFamily(WindowRendering, WindowQueries):
    """Base of a metric family whose cells hold ``{scope: {id: {field: number}}}`` per window.

    What it publishes, and how, is its ``spec`` (``FamilySpec``); a subclass adds its rules (``apply``).
    """

    spec: FamilySpec
    #: What "today" is when a partition is republished (``mark_partition_dirty``).
    wall_clock: Callable[[], float] = staticmethod(time.time)
    #: Per-rep targets: ``(rep, grain) -> {field: target}`` for day, week and month windows (None: none).
    targets: Callable[[str, str], Mapping[str, int]] | None = None

    def __init__(self, cells: StateStore[Cell], tz: ZoneInfo, retention_s: float) -> None:
        spec = self.spec
        self.name = spec.name
        self.redis_prefix = spec.redis_prefix
        #: Scopes published to Redis and the metric topic (others, like ``rep_team``, feed Prometheus only).
        self.published_scopes = spec.scopes
        #: Scopes kept only in the all-time cell (label combinations Prometheus needs).
        self.all_time_scopes = spec.all_time_scopes
        #: Rolling window name -> span in hours.
        self.rolling_hours = spec.rolling
        #: Per-rep rates published with the rep's team's value beside them (``team_<rate>``, see ``group_of``).
        self.beside_rates = spec.beside
        self.derived: Derived = spec.derived
        # Chosen once from the spec (a render calls it per aggregate): no test per call.
        self._publish = publisher(spec)
        self.cells = cells
        self.tz = tz
        self.retention_s = retention_s
        self.dirty: set[Dirty] = set()
        #: Aggregates to publish again with no change of their own (a partition assigned, Redis emptied, the
        #: hour turned for rolling windows): rendered only within the slow budget, after the dirty ones, so a
        #: month of history republished after a restart does not hold up the flushes of live traffic.
        self.backlog: set[Dirty] = set()
        #: Highest offset processed per partition: the version of rolling partials, which shrink with time.
        self.partition_wm: dict[int, int] = {}
        #: Highest offset applied in memory per partition since it was loaded, persisted or not. What a render
        #: publishes holds every event up to it, so it is the partial's version for Redis: stamped with the
        #: persisted watermark only, a render between a batch and its commit carried new counts under an old
        #: version, which Redis refused after a restart (it held a newer one) while the dirty mark was spent.
        self.staged_wm: dict[int, int] = {}
        self._hours_kept = max(self.rolling_hours.values()) + 1
        self._window_cache: dict[int, tuple[tuple[int, str], tuple[WindowSpec, ...]]] = {}
        #: Deltas summed by ``add`` until ``settle``: (partition, windows key, only, now) -> (windows, {(scope, id): fields}).
        self._pending: dict[tuple[int, tuple[int, str], str | None, float], tuple[tuple[WindowSpec, ...], dict[tuple[str, str], dict[str, Number]]]] = {}
        #: (partition, scope, id) -> (current hour, {span hours: sum of the span's completed hours}).
        self._rolling_base: dict[tuple[int, str, str], tuple[int, dict[int, dict[str, Number]]]] = {}
        #: Per partition, during a render: the UTC hours that have a cell, ascending (see ``_rolling``).
        self._hours_present: dict[int, list[int]] = {}
        self._rendering = False

    @property
    def stores(self) -> tuple[StateStore[Any], ...]:
        """The cell stores a batch writes, in order."""
        return (self.cells,)

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool:
        """Apply one admitted event (its rules); True if it concerned this family."""
        raise NotImplementedError

    def on_loaded(self, partition: int) -> None:
        """Hook: a partition's cells were just loaded (rebuild in-memory indexes here)."""

    # -- counting ------------------------------------------------------------------------------------

    def add(
        self, partition: int, offset: int, epoch: float, now: float, deltas: Sequence[Delta], only: str | None = None
    ) -> None:
        """Apply deltas to every kept window cell of the instant ``epoch`` that has not seen ``offset``.

        ``only``: a single grain (e.g. ``"month"`` for a monthly quota) instead of every window.

        An offset past the partition's persisted watermark is past every cell's (all of a batch, unless a
        crash is being replayed): its deltas are summed per (the instant's windows, scope, id) and reach the
        cells at ``settle``, which the processor calls after each batch. A batch's events mostly share their
        windows, so each window cell then changes once per id and batch instead of once per event.
        """
        persisted = self.partition_wm.get(partition)
        if persisted is None or offset <= persisted:
            self._apply(partition, offset, now, self._windows(epoch), deltas, only)
            return
        group_key, windows = self._windows_keyed(epoch)
        key = (partition, group_key, only, now)
        group = self._pending.get(key)
        if group is None:
            group = self._pending[key] = (windows, {})
        sums = group[1]
        for scope, ident, changes in deltas:
            fields = sums.get((scope, ident))
            if fields is None:
                sums[(scope, ident)] = dict(changes)  # a copy: a family may pass one dict for several deltas
            else:
                add_fields(fields, changes)

    def settle(self) -> None:
        """Apply the deltas ``add`` summed since the last call to the cells (before a render or a persist)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for (partition, _group, only, now), (windows, sums) in pending.items():
            deltas = [(scope, ident, fields) for (scope, ident), fields in sums.items()]
            self._apply(partition, None, now, windows, deltas, only)

    def _apply(
        self,
        partition: int,
        offset: int | None,
        now: float,
        windows: tuple[WindowSpec, ...],
        deltas: Sequence[Delta],
        only: str | None,
    ) -> None:
        """Deltas into the kept cells of ``windows``; ``offset`` None: past every cell's watermark (summed ones)."""
        # The hot path of every family: the partition's cells and the scope tests are resolved once per
        # call, not once per window and delta.
        cutoff = now - self.retention_s
        current_hour = hour_bucket(now)
        oldest_hour = current_hour - self._hours_kept
        store = self.cells
        cells = store.loaded(partition)
        dirty_add = self.dirty.add
        published = self.published_scopes
        rolling_base = self._rolling_base
        everywhere = [delta for delta in deltas if delta[0] not in self.all_time_scopes]
        for grain, bucket, name, end, hour in windows:
            if only is not None and grain != only:
                continue
            if hour is not None:
                if not oldest_hour < hour <= current_hour + 24:
                    continue  # outside every rolling window (now, or within a day of clock skew)
            elif end is not None and end <= cutoff:
                continue  # a late event for a window no longer kept
            cell = cells.get(name)
            if cell is None:
                cell = store.cell(partition, name)
            if offset is not None and offset <= cell["wm"]:
                continue  # already applied before a crash: replay must not count it twice
            for scope, ident, changes in deltas if grain == "all" else everywhere:
                try:
                    fields = cell[scope][ident]
                except KeyError:
                    fields = cell.setdefault(scope, {}).setdefault(ident, {})
                get = fields.get
                for field, value in changes.items():
                    fields[field] = get(field, 0) + value
                if scope not in published:
                    continue
                if hour is None:
                    dirty_add((partition, grain, bucket, scope, ident))
                    continue
                dirty_add((partition, "rolling", ALL_TIME, scope, ident))
                if hour == current_hour:
                    continue
                # A completed hour changed: fold the change into the cached sums of the spans holding it
                # (``_rolling``), so they stay equal to their hours' cells.
                key = (partition, scope, ident)
                cached = rolling_base.get(key)
                if cached is None:
                    continue
                if cached[0] != current_hour:
                    del rolling_base[key]
                    continue
                for span, base in cached[1].items():
                    if current_hour - span < hour < current_hour:
                        add_fields(base, changes)
            store.touch(partition, name)

    def _windows(self, epoch: float) -> tuple[WindowSpec, ...]:
        """The cells an instant falls in."""
        return self._windows_keyed(epoch)[1]

    def _windows_keyed(self, epoch: float) -> tuple[tuple[int, str], tuple[WindowSpec, ...]]:
        """The cells an instant falls in, with a key naming them ((UTC hour, day): instants with the same key
        fall in the same cells), cached per quarter hour (all real UTC offsets are multiples)."""
        quarter = int(epoch // 900)
        found = self._window_cache.get(quarter)
        if found is None:
            day, week, month = calendar_buckets(epoch, self.tz)
            hour = hour_bucket(epoch)
            windows = [("all", ALL_TIME), ("hour", str(hour)), ("day", day), ("week", week), ("month", month)]
            found = (hour, day), tuple(
                (grain, bucket, f"{grain}|{bucket}", window_end_ts(grain, bucket, self.tz), hour if grain == "hour" else None)
                for grain, bucket in windows
            )
            if len(self._window_cache) > 50_000:
                self._window_cache.clear()
            self._window_cache[quarter] = found
        return found

    def expire(self, partition: int, now: float) -> int:
        """Delete cells whose window left retention (hour cells once older than the longest rolling span)."""
        self.settle()
        oldest_hour = hour_bucket(now) - self._hours_kept
        cutoff = now - self.retention_s
        expired = 0
        for name, _cell in self.cells.items(partition):
            grain, bucket = name.split("|", 1)
            if grain == "hour":
                stale = int(bucket) <= oldest_hour
            elif grain in ("day", "week", "month"):
                end = window_end_ts(grain, bucket, self.tz)
                stale = end is not None and end <= cutoff
            else:
                stale = False
            if stale:
                self.cells.delete(partition, name)
                expired += 1
        return expired

    # -- what to publish -----------------------------------------------------------------------------

    def mark_partition_dirty(self, partition: int) -> None:
        """Republish everything a partition holds (after it was assigned): its all-time and today's (``wall_clock``)
        aggregates with the next flush, the other windows through the slow budget (``backlog``)."""
        today = calendar_buckets(self.wall_clock(), self.tz)[0]
        for name, cell in self.cells.items(partition):
            grain, bucket = name.split("|", 1)
            if grain not in ("all", "hour", "day", "week", "month"):
                continue
            live = grain == "all" or (grain == "day" and bucket == today)
            into = self.dirty if live else self.backlog
            if grain == "hour":
                bucket = ALL_TIME
                grain = "rolling"
            for scope in self.published_scopes:
                for ident in cell.get(scope, NO_FIELDS):
                    into.add((partition, grain, bucket, scope, ident))

    def startup_events(self) -> list[Event]:
        """Events to write to ``salespulse.events`` when a worker starts (configuration as events): none by default."""
        return []

    def take_follow_ups(self) -> list[Event]:
        """Follow-up events for ``salespulse.events``: none, unless a family links partitions."""
        return []

    def mark_rolling_dirty(self, partitions: Iterable[int]) -> None:
        """Republish rolling windows (their values change as hours pass, with no new event), within the slow budget."""
        for partition in partitions:
            for name, cell in self.cells.items(partition):
                if name.startswith("hour|"):
                    for scope in self.published_scopes:
                        for ident in cell.get(scope, NO_FIELDS):
                            self.backlog.add((partition, "rolling", ALL_TIME, scope, ident))

    def drop_partition(self, partition: int) -> None:
        """Forget pending publications and caches of a partition this worker lost."""
        self.dirty = {entry for entry in self.dirty if entry[0] != partition}
        self.backlog = {entry for entry in self.backlog if entry[0] != partition}
        self.partition_wm.pop(partition, None)
        self.staged_wm.pop(partition, None)
        self._rolling_base = {key: value for key, value in self._rolling_base.items() if key[0] != partition}

    def published_fields(self, fields: Mapping[str, Number]) -> dict[str, Number]:
        """The fields of a partial as published (``publisher``: as the spec says, unless a family overrides it)."""
        return self._publish(fields)
