"""Business-hours arithmetic: SLA deadlines and ages counted in *open* time only.

Pure functions, no I/O. A :class:`BusinessHours` is a weekly schedule of open intervals in
local (wall-clock) time of a time zone, plus whole local days that are closed (holidays).

Semantics, precisely:

* An interval ``(a, b)`` on local date ``d`` opens at the first instant the local clock reads
  ``d a`` and closes at the first instant it reads ``d b`` (``b == END_OF_DAY`` means local
  midnight that starts ``d + 1``). Local times skipped by a spring-forward jump resolve to the
  instant of the jump; local times repeated by a fall-back resolve to their first occurrence.
  Open time is then counted in *real elapsed seconds* between those instants, so a 00:00–24:00
  day lasts 23 h on a spring-forward day and 25 h on a fall-back day.
* A holiday closes every interval that *starts* on that local date.
* ``add_business_seconds(h, start, x)`` is the earliest instant ``t >= start`` such that
  ``business_seconds_between(h, start, t) == x``; so a deadline that lands exactly on a closing
  time is that closing time, and ``x == 0`` returns ``start`` itself.

Cost: O(local days spanned) per call; the UTC instants of each local day's intervals are
computed once per :class:`BusinessHours` and cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "END_OF_DAY",
    "BusinessHours",
    "add_business_seconds",
    "business_seconds_between",
    "is_open",
]

#: Interval end meaning 24:00 (local midnight at the end of the day).
END_OF_DAY: time = time.max

_UTC = timezone.utc
_ONE_DAY = timedelta(days=1)
_ZERO = timedelta(0)
_CACHE_LIMIT = 50_000  # local days kept per schedule (~137 years)

Interval = tuple[time, time]
_UtcIntervals = tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class BusinessHours:
    """A weekly opening schedule in a time zone.

    ``weekly`` maps a weekday (0 = Monday … 6 = Sunday) to its open intervals ``(start, end)`` in
    local time; a missing weekday is closed all day; ``end`` may be :data:`END_OF_DAY` (24:00).
    Intervals of a day are sorted on construction and must not overlap (touching is fine).
    ``holidays`` are local dates closed all day.
    """

    tz: tzinfo
    weekly: dict[int, list[Interval]]
    holidays: frozenset[date] = frozenset()
    _days: dict[int, _UtcIntervals] = field(default_factory=dict, init=False, repr=False, compare=False)
    _always: bool = field(default=False, init=False, repr=False, compare=False)
    _never: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tz, tzinfo):
            raise TypeError(f"tz must be a tzinfo (e.g. ZoneInfo), got {self.tz!r}")
        if not isinstance(self.weekly, Mapping):
            raise TypeError("weekly must map weekday (0=Mon..6=Sun) to a list of (start, end) times")
        weekly: dict[int, list[Interval]] = {}
        for day, intervals in self.weekly.items():
            if not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 6:
                raise ValueError(f"weekday must be an int 0 (Monday) .. 6 (Sunday), got {day!r}")
            weekly[day] = _normalise_day(day, intervals)
        holidays = frozenset(self.holidays)
        for holiday in holidays:
            if isinstance(holiday, datetime) or not isinstance(holiday, date):
                raise TypeError(f"holidays must be dates, got {holiday!r}")
        object.__setattr__(self, "weekly", weekly)
        object.__setattr__(self, "holidays", holidays)
        always = not holidays and all(weekly.get(d) == [(time.min, END_OF_DAY)] for d in range(7))
        object.__setattr__(self, "_always", always)
        object.__setattr__(self, "_never", not any(weekly.values()))

    def __hash__(self) -> int:
        return hash((self.tz, tuple((d, tuple(v)) for d, v in sorted(self.weekly.items())), self.holidays))

    @classmethod
    def always(cls) -> BusinessHours:
        """Open around the clock, every day (the default when nothing is configured)."""
        return cls(tz=ZoneInfo("UTC"), weekly={d: [(time.min, END_OF_DAY)] for d in range(7)})

    @property
    def is_always_open(self) -> bool:
        """True when every instant is open: then business time is plain elapsed time."""
        return self._always

    @property
    def is_never_open(self) -> bool:
        """True when the weekly schedule has no open interval at all."""
        return self._never

    def open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open intervals of local date ``day`` as ``[start, end)`` UTC instants (empty on a holiday)."""
        return list(self._utc_intervals(day.toordinal()))

    def _utc_intervals(self, ordinal: int) -> _UtcIntervals:
        cached = self._days.get(ordinal)
        if cached is not None:
            return cached
        day = date.fromordinal(ordinal)
        out: list[tuple[datetime, datetime]] = []
        if day not in self.holidays:
            for start, end in self.weekly.get(day.weekday(), ()):
                opens = _local_to_utc(day, start, self.tz)
                if end == END_OF_DAY:
                    closes = _local_to_utc(day + _ONE_DAY, time.min, self.tz)
                else:
                    closes = _local_to_utc(day, end, self.tz)
                if closes > opens:  # an interval lying wholly inside a skipped hour is empty
                    out.append((opens, closes))
        result = tuple(out)
        if len(self._days) >= _CACHE_LIMIT:
            self._days.clear()
        self._days[ordinal] = result
        return result


def add_business_seconds(hours: BusinessHours, start: datetime, seconds: float) -> datetime:
    """The instant (UTC) when ``seconds`` of open time have elapsed after ``start``.

    ``start`` must be timezone-aware; it may fall inside or outside opening hours. Seconds are
    counted to the microsecond. Raises ``ValueError`` for negative or non-finite ``seconds``,
    and when the schedule is never open (the deadline would never come).
    """
    start_utc = _as_utc(start, "start")
    remaining = timedelta(microseconds=_to_microseconds(seconds))
    if remaining == _ZERO:
        return start_utc
    if hours.is_always_open:
        return start_utc + remaining
    if hours.is_never_open:
        raise ValueError("business hours are never open: no deadline can be reached")
    ordinal = start_utc.astimezone(hours.tz).date().toordinal() - 1
    closed_run, closed_limit = 0, 14 + len(hours.holidays)
    while True:
        intervals = hours._utc_intervals(ordinal)
        if intervals:
            closed_run = 0
            for opens, closes in intervals:
                if closes <= start_utc:
                    continue
                if opens < start_utc:
                    opens = start_utc
                available = closes - opens
                if remaining <= available:
                    return opens + remaining
                remaining -= available
        else:
            closed_run += 1
            if closed_run > closed_limit:
                raise ValueError("business hours never open after start: no deadline can be reached")
        ordinal += 1


def business_days_after(hours: BusinessHours, start: float, days: float) -> float:
    """``days`` business days after ``start``: the same local time that many open days later (days with no
    opening hours, weekends and holidays, are skipped; a fraction counts as that share of 24 hours), or the
    next opening when that instant is closed. Around the clock it is ``start + days × 24 h``."""
    if hours.is_always_open:
        return start + days * 86400.0
    whole, fraction = int(days), days - int(days)
    local = datetime.fromtimestamp(start, timezone.utc).astimezone(hours.tz)
    counted = 0
    while counted < whole:
        local += timedelta(days=1)  # aware arithmetic keeps the wall time across a DST change
        if hours.open_intervals(local.date()):
            counted += 1
    at = local.astimezone(timezone.utc) + timedelta(seconds=fraction * 86400.0)
    return add_business_seconds(hours, at, 1e-6).timestamp() - 1e-6


def business_seconds_between(hours: BusinessHours, start: datetime, end: datetime) -> float:
    """Open seconds in ``[start, end)`` (0.0 when ``end <= start``); both must be timezone-aware."""
    start_utc = _as_utc(start, "start")
    end_utc = _as_utc(end, "end")
    if end_utc <= start_utc:
        return 0.0
    if hours.is_always_open:
        return (end_utc - start_utc).total_seconds()
    total = _ZERO
    first = start_utc.astimezone(hours.tz).date().toordinal() - 1
    last = end_utc.astimezone(hours.tz).date().toordinal() + 1
    for ordinal in range(first, last + 1):
        for opens, closes in hours._utc_intervals(ordinal):
            lo = opens if opens > start_utc else start_utc
            hi = closes if closes < end_utc else end_utc
            if hi > lo:
                total += hi - lo
    return total.total_seconds()


def is_open(hours: BusinessHours, at: datetime) -> bool:
    """Whether instant ``at`` (timezone-aware) falls inside an open interval."""
    at_utc = _as_utc(at, "at")
    if hours.is_always_open:
        return True
    ordinal = at_utc.astimezone(hours.tz).date().toordinal()
    return any(
        opens <= at_utc < closes
        for day in (ordinal - 1, ordinal, ordinal + 1)
        for opens, closes in hours._utc_intervals(day)
    )


# --- helpers -----------------------------------------------------------------------------------------------------


def _normalise_day(day: int, intervals: Iterable[Any]) -> list[Interval]:
    if isinstance(intervals, (str, bytes)) or not isinstance(intervals, Iterable):
        raise TypeError(f"weekday {day}: intervals must be a list of (start, end) times")
    out: list[Interval] = []
    for item in intervals:
        if not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError(f"weekday {day}: interval must be a (start, end) pair, got {item!r}")
        start, end = item
        if not isinstance(start, time) or not isinstance(end, time):
            raise TypeError(f"weekday {day}: interval bounds must be datetime.time, got {item!r}")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"weekday {day}: interval bounds are local wall-clock times and must be naive")
        if start == END_OF_DAY or not start < end:
            raise ValueError(f"weekday {day}: interval must start before it ends, got {_fmt(start)}-{_fmt(end)}")
        out.append((start, end))
    out.sort()
    for (_, prev_end), (next_start, next_end) in zip(out, out[1:]):
        if next_start < prev_end:
            raise ValueError(f"weekday {day}: intervals overlap at {_fmt(next_start)}-{_fmt(next_end)}")
    return out


def _fmt(t: time) -> str:
    if t == END_OF_DAY:
        return "24:00"
    return t.isoformat(timespec="minutes" if not (t.second or t.microsecond) else "auto")


def _local_to_utc(day: date, wall: time, tz: tzinfo) -> datetime:
    """The first instant whose local wall-clock reading in ``tz`` is at or after ``day wall``."""
    naive = datetime.combine(day, wall)
    candidate = naive.replace(tzinfo=tz).astimezone(_UTC)  # fold=0: first occurrence when repeated
    if candidate.astimezone(tz).replace(tzinfo=None) == naive:
        return candidate
    # ``naive`` was skipped (spring forward): find the instant of the jump by bisection.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(_UTC)  # wall clock still before ``naive``
    hi = candidate  # wall clock already past ``naive``
    if not (lo < hi and lo.astimezone(tz).replace(tzinfo=None) < naive):
        return candidate
    while hi - lo > timedelta(microseconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def _as_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(_UTC)


def _to_microseconds(seconds: float) -> int:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise TypeError(f"seconds must be a number, got {seconds!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
    return round(value * 1_000_000)
