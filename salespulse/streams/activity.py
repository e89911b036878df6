"""The activity family in the stream: per-partition cells of rep and team activity counts.

Cells (``CellStore`` prefix ``activity``), each ``{"wm", "rep": {id: counts}, "team": {id: counts}}``:
``all|-`` (all time, also ``rep_team`` for Prometheus), ``hour|<utc hour>`` (for rolling 24 h / 7 d),
``day|<date>``, ``week|<iso week>``, ``month|<yyyy-mm>`` in the configured time zone.
"""

from __future__ import annotations

import time
from functools import lru_cache
from collections.abc import Iterable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from salespulse.metrics.activity import Activity, activity_of, add_counts, split_field, with_rollups
from salespulse.metrics.windows import (
    ALL_TIME,
    ROLLING_HOURS,
    bucket_end,
    calendar_buckets,
    hour_bucket,
    rolling_hour_range,
)
from salespulse.publishers.partials import Partial
from salespulse.streams.cells import Cell, CellStore

FAMILY = "activity"
REDIS_PREFIX = "salespulse:activity"
_HOURS_KEPT = max(ROLLING_HOURS.values()) + 1
_SCOPES = ("rep", "team")
_REP_TEAM_SEP = "\t"

# A dirty entry: (partition, grain, bucket, scope, id); grain "rolling" means the rolling windows.
Dirty = tuple[int, str, str, str, str]


@lru_cache(maxsize=4096)
def _end_ts(grain: str, bucket: str, tz: ZoneInfo) -> float | None:
    end = bucket_end(grain, bucket, tz)
    return None if end is None else end.timestamp()


def window_name(grain: str, bucket: str) -> str:
    """The published window name of a cell: ``all``, ``day:2026-11-22``, ``rolling:24h`` ..."""
    return "all" if grain == "all" else f"{grain}:{bucket}"


class ActivityFamily:
    """Counts rep activities into cells and renders dirty aggregates as publishable partials."""

    name = FAMILY

    def __init__(
        self,
        cells: CellStore,
        tz: ZoneInfo,
        retention_s: float,
        team_of_rep: dict[str, str] | None = None,
    ) -> None:
        self.cells = cells
        self.tz = tz
        self.retention_s = retention_s
        self.team_of_rep = team_of_rep or {}
        self.dirty: set[Dirty] = set()
        #: Highest offset processed per partition: the version of rolling partials, which shrink with time.
        self.partition_wm: dict[int, int] = {}
        self._window_cache: dict[int, tuple[tuple[str, str, str, float | None], ...]] = {}
        self._rolling_base: dict[tuple[int, str, str, int], tuple[int, dict[str, int]]] = {}

    def apply(self, partition: int, offset: int, event: object, now: float) -> bool:
        """Count one admitted event; True if it was an activity."""
        activity = activity_of(event, self.team_of_rep)
        if activity is None:
            return False
        epoch = event.occurred_at.timestamp()  # type: ignore[attr-defined]
        cutoff = now - self.retention_s
        oldest_hour = hour_bucket(now) - _HOURS_KEPT
        rep, team, field = activity.rep, activity.team, activity.field
        dirty = self.dirty
        for grain, bucket, name, end in self._windows(epoch):
            if grain == "hour":
                if not oldest_hour < int(bucket) <= oldest_hour + _HOURS_KEPT + 24:
                    continue  # outside every rolling window (now, or within a day of clock skew)
            elif end is not None and end <= cutoff:
                continue  # a late event for a window no longer kept
            if not self._count(partition, offset, name, rep, team, field, grain == "all"):
                continue
            if grain == "hour":
                dirty.add((partition, "rolling", ALL_TIME, "rep", rep))
                dirty.add((partition, "rolling", ALL_TIME, "team", team))
                if int(bucket) != oldest_hour + _HOURS_KEPT:  # a completed hour changed: cached sums are stale
                    for span in ROLLING_HOURS.values():
                        self._rolling_base.pop((partition, "rep", rep, span), None)
                        self._rolling_base.pop((partition, "team", team, span), None)
            else:
                dirty.add((partition, grain, bucket, "rep", rep))
                dirty.add((partition, grain, bucket, "team", team))
        return True

    def _windows(self, epoch: float) -> tuple[tuple[str, str, str, float | None], ...]:
        """The cells an instant falls in: (grain, bucket, cell name, window end); cached per quarter hour."""
        quarter = int(epoch // 900)
        found = self._window_cache.get(quarter)
        if found is None:
            day, week, month = calendar_buckets(epoch, self.tz)
            windows = [("all", ALL_TIME), ("hour", str(hour_bucket(epoch))), ("day", day), ("week", week), ("month", month)]
            found = tuple(
                (grain, bucket, f"{grain}|{bucket}", _end_ts(grain, bucket, self.tz)) for grain, bucket in windows
            )
            if len(self._window_cache) > 50_000:
                self._window_cache.clear()
            self._window_cache[quarter] = found
        return found

    def _kept(self, grain: str, bucket: str, now: float) -> bool:
        end = _end_ts(grain, bucket, self.tz)
        return end is None or end > now - self.retention_s

    def _count(self, partition: int, offset: int, name: str, rep: str, team: str, field: str, all_time: bool) -> bool:
        cell = self.cells.cell(partition, name)
        if offset <= cell["wm"]:
            return False  # already applied before a crash: replay must not count it twice
        for scope, ident in (("rep", rep), ("team", team)):
            try:
                counts = cell[scope][ident]
            except KeyError:
                counts = cell.setdefault(scope, {}).setdefault(ident, {})
            counts[field] = counts.get(field, 0) + 1
        if all_time:
            counts = cell.setdefault("rep_team", {}).setdefault(f"{rep}{_REP_TEAM_SEP}{team}", {})
            counts[field] = counts.get(field, 0) + 1
        self.cells.touch(partition, name)
        return True

    def expire(self, partition: int, now: float) -> int:
        """Delete cells whose window left retention (hour cells once older than the longest rolling span)."""
        oldest_hour = hour_bucket(now) - _HOURS_KEPT
        expired = 0
        for name, _cell in self.cells.items(partition):
            grain, bucket = name.split("|", 1)
            if (grain == "hour" and int(bucket) <= oldest_hour) or (
                grain in ("day", "week", "month") and not self._kept(grain, bucket, now)
            ):
                self.cells.delete(partition, name)
                expired += 1
        return expired

    def mark_partition_dirty(self, partition: int) -> None:
        """Republish everything a partition holds (after it was assigned, or Redis was emptied)."""
        for name, cell in self.cells.items(partition):
            grain, bucket = name.split("|", 1)
            for scope in _SCOPES:
                for ident in cell.get(scope, {}):
                    if grain == "hour":
                        self.dirty.add((partition, "rolling", ALL_TIME, scope, ident))
                    else:
                        self.dirty.add((partition, grain, bucket, scope, ident))

    def mark_rolling_dirty(self, partitions: Iterable[int]) -> None:
        """Republish rolling windows (their values change as hours pass, with no new event)."""
        for partition in partitions:
            for name, cell in self.cells.items(partition):
                if name.startswith("hour|"):
                    for scope in _SCOPES:
                        for ident in cell.get(scope, {}):
                            self.dirty.add((partition, "rolling", ALL_TIME, scope, ident))

    def drop_partition(self, partition: int) -> None:
        """Forget pending publications of a partition this worker lost."""
        self.dirty = {entry for entry in self.dirty if entry[0] != partition}
        self.partition_wm.pop(partition, None)
        self._rolling_base = {key: value for key, value in self._rolling_base.items() if key[0] != partition}

    def render(self, owned: set[int], now: float | None = None) -> list[Partial]:
        """Take the dirty aggregates of owned partitions and return them as absolute partials."""
        now = time.time() if now is None else now
        dirty, self.dirty = self.dirty, set()
        updated_at = datetime.fromtimestamp(now, timezone.utc).isoformat()
        partials: list[Partial] = []
        for partition, grain, bucket, scope, ident in dirty:
            if partition not in owned:
                continue
            if grain == "rolling":
                for span, hours in ROLLING_HOURS.items():
                    counts, wm = self._rolling(partition, scope, ident, hours, now)
                    partials.append(
                        self._partial(partition, scope, ident, f"rolling:{span}", counts, wm, 0, updated_at)
                    )
                continue
            cell = self.cells.get(partition, f"{grain}|{bucket}")
            if cell is None:
                continue
            counts = cell.get(scope, {}).get(ident, {})
            end = _end_ts(grain, bucket, self.tz)
            ttl = 0 if end is None else max(60, int(end + self.retention_s - now))
            partials.append(
                self._partial(partition, scope, ident, window_name(grain, bucket), counts, cell["wm"], ttl, updated_at)
            )
        return partials

    def _rolling(self, partition: int, scope: str, ident: str, hours: int, now: float) -> tuple[dict[str, int], int]:
        # Sum of the completed hours, cached until the hour turns or a late event lands in one of
        # them; plus the current hour's cell, which changes with every event.
        current = hour_bucket(now)
        key = (partition, scope, ident, hours)
        cached = self._rolling_base.get(key)
        if cached is None or cached[0] != current:
            base: dict[str, int] = {}
            for hour in rolling_hour_range(hours, now)[:-1]:
                cell = self.cells.get(partition, f"hour|{hour}")
                if cell is not None:
                    counts = cell.get(scope, {}).get(ident)
                    if counts:
                        add_counts(base, counts)
            cached = self._rolling_base[key] = (current, base)
        total = dict(cached[1])
        cell: Cell | None = self.cells.get(partition, f"hour|{current}")
        if cell is not None:
            counts = cell.get(scope, {}).get(ident)
            if counts:
                add_counts(total, counts)
        return total, self.partition_wm.get(partition, -1)

    def _partial(
        self,
        partition: int,
        scope: str,
        ident: str,
        window: str,
        counts: dict[str, int],
        wm: int,
        ttl: int,
        updated_at: str,
    ) -> Partial:
        fields = with_rollups(counts)
        return Partial(
            family=FAMILY,
            redis_key=f"{REDIS_PREFIX}:{scope}:{ident}:{window}",
            partition=partition,
            watermark=wm,
            fields=fields,
            ttl_s=ttl,
            topic_key=f"{scope}:{ident}:{window}:p{partition}",
            record={
                "family": FAMILY,
                "scope": scope,
                "id": ident,
                "window": window,
                "partition": partition,
                "watermark": wm,
                "counts": fields,
                "updated_at": updated_at,
            },
        )

    def counter_totals(self, owned: Iterable[int]) -> dict[tuple[str, str, str, str], int]:
        """All-time counts per (rep, team, kind, outcome), summed over owned partitions (Prometheus)."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for partition in owned:
            cell = self.cells.get(partition, f"all|{ALL_TIME}")
            if cell is None:
                continue
            for rep_team, counts in cell.get("rep_team", {}).items():
                rep, _, team = rep_team.partition(_REP_TEAM_SEP)
                for field, n in counts.items():
                    key = (rep, team, *split_field(field))
                    totals[key] = totals.get(key, 0) + n
        return totals
