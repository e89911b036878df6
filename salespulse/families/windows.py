"""Event-time windows: calendar buckets (day, ISO week, month) in a time zone, UTC hour buckets, rolling spans.

A *bucket* names one window of one grain: ``day`` ``2026-11-22``, ``week`` ``2026-W47``,
``month`` ``2026-11``, ``hour`` ``493902`` (hours since the epoch, UTC) and ``all`` ``-``.
Rolling windows (last 24 h, last 7 d) are sums of the last ``span`` hour buckets, the current one
included: they cover between ``span - 1 h`` and ``span`` of event time, never more.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

ALL_TIME = "-"
CALENDAR_GRAINS: tuple[str, ...] = ("day", "week", "month")
#: Rolling window name -> span in hours.
ROLLING_HOURS: dict[str, int] = {"24h": 24, "7d": 168}
_QUARTER_HOUR = 900  # every real UTC offset is a multiple of 15 minutes


def hour_bucket(epoch_s: float) -> int:
    """The UTC hour (hours since the epoch) that contains ``epoch_s``."""
    return int(epoch_s // 3600)


def calendar_buckets(epoch_s: float, tz: ZoneInfo) -> tuple[str, str, str]:
    """``(day, iso_week, month)`` bucket names of an instant, in the calendar of ``tz``."""
    return _calendar_buckets_of_quarter(int(epoch_s // _QUARTER_HOUR), tz)


@lru_cache(maxsize=8192)
def _calendar_buckets_of_quarter(quarter: int, tz: ZoneInfo) -> tuple[str, str, str]:
    local = datetime.fromtimestamp(quarter * _QUARTER_HOUR, tz)
    iso = local.isocalendar()
    return local.date().isoformat(), f"{iso.year}-W{iso.week:02d}", f"{local.year:04d}-{local.month:02d}"


def bucket_end(grain: str, bucket: str, tz: ZoneInfo) -> datetime | None:
    """When a bucket's window ends (exclusive), as an aware datetime; ``None`` for all-time."""
    if grain == "all":
        return None
    if grain == "hour":
        return datetime.fromtimestamp((int(bucket) + 1) * 3600, timezone.utc)
    if grain == "day":
        start = date.fromisoformat(bucket)
        end = start + timedelta(days=1)
    elif grain == "week":
        year, week = bucket.split("-W")
        end = date.fromisocalendar(int(year), int(week), 1) + timedelta(weeks=1)
    elif grain == "month":
        y, m = (int(part) for part in bucket.split("-"))
        end = date(y + m // 12, m % 12 + 1, 1)
    else:
        raise ValueError(f"unknown grain {grain!r}")
    return datetime(end.year, end.month, end.day, tzinfo=tz)


def rolling_hour_range(span_hours: int, now_s: float) -> range:
    """The ``span_hours`` hour buckets of the rolling window at ``now_s``: the current hour and those before it."""
    current = hour_bucket(now_s)
    return range(current - span_hours + 1, current + 1)


def iso(epoch: float) -> str:
    """An instant as the contract writes it: ISO 8601 in UTC."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()
