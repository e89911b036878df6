"""Event-time windows: calendar buckets in a time zone, ISO weeks, bucket ends, DST days and rolling hour ranges."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salespulse.families.windows import (
    ALL_TIME,
    ROLLING_HOURS,
    bucket_end,
    calendar_buckets,
    hour_bucket,
    rolling_hour_range,
)

UTC = ZoneInfo("UTC")
LA = ZoneInfo("America/Los_Angeles")
KOLKATA = ZoneInfo("Asia/Kolkata")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
OSLO = ZoneInfo("Europe/Oslo")
SANTIAGO = ZoneInfo("America/Santiago")  # DST changes at local midnight
CHATHAM = ZoneInfo("Pacific/Chatham")  # +12:45 / +13:45
ZONES = [UTC, LA, KOLKATA, KATHMANDU, OSLO, SANTIAGO, CHATHAM, ZoneInfo("Australia/Lord_Howe")]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# --- calendar buckets around local midnight ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "last_instant_of_day", "day"),
    [
        (UTC, utc(2026, 11, 22, 23, 59, 59), "2026-11-22"),
        (LA, utc(2026, 11, 23, 7, 59, 59), "2026-11-22"),  # -08:00
        (LA, utc(2026, 7, 1, 6, 59, 59), "2026-06-30"),  # -07:00 in summer
        (KOLKATA, utc(2026, 11, 22, 18, 29, 59), "2026-11-22"),  # +05:30
        (KATHMANDU, utc(2026, 11, 22, 18, 14, 59), "2026-11-22"),  # +05:45
        (CHATHAM, utc(2026, 6, 22, 11, 14, 59), "2026-06-22"),  # +12:45
    ],
    ids=["utc", "la-winter", "la-summer", "kolkata", "kathmandu", "chatham"],
)
def test_day_bucket_changes_exactly_at_local_midnight(tz: ZoneInfo, last_instant_of_day: float, day: str) -> None:
    next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    assert calendar_buckets(last_instant_of_day, tz)[0] == day
    assert calendar_buckets(last_instant_of_day + 0.999, tz)[0] == day
    assert calendar_buckets(last_instant_of_day + 1, tz)[0] == next_day


def test_the_same_instant_is_a_different_day_in_different_zones() -> None:
    instant = utc(2026, 11, 22, 18, 20)  # 10:20 in LA, 23:50 in Kolkata, 00:05 next day in Kathmandu
    assert calendar_buckets(instant, UTC)[0] == "2026-11-22"
    assert calendar_buckets(instant, LA)[0] == "2026-11-22"
    assert calendar_buckets(instant, KOLKATA)[0] == "2026-11-22"
    assert calendar_buckets(instant, KATHMANDU)[0] == "2026-11-23"


def test_utc_evening_is_the_previous_local_day_in_los_angeles() -> None:
    assert calendar_buckets(utc(2026, 11, 23, 3, 0), LA) == ("2026-11-22", "2026-W47", "2026-11")
    assert calendar_buckets(utc(2026, 11, 23, 3, 0), UTC) == ("2026-11-23", "2026-W48", "2026-11")


def test_month_bucket_follows_the_local_calendar() -> None:
    instant = utc(2026, 11, 30, 20, 0)  # 1 Dec 01:30 in Kolkata
    assert calendar_buckets(instant, UTC)[2] == "2026-11"
    assert calendar_buckets(instant, KOLKATA)[2] == "2026-12"
    assert calendar_buckets(utc(2027, 1, 1, 7, 30), LA) == ("2026-12-31", "2026-W53", "2026-12")


@settings(max_examples=500, deadline=None)
@given(
    instant=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
    tz=st.sampled_from(ZONES),
)
def test_calendar_buckets_equal_the_local_date_iso_week_and_month(instant: datetime, tz: ZoneInfo) -> None:
    # as the stream calls it: with ``occurred_at.timestamp()`` (microsecond precision)
    local = instant.astimezone(tz)
    iso = local.isocalendar()
    expected = (local.date().isoformat(), f"{iso.year}-W{iso.week:02d}", local.strftime("%Y-%m"))
    assert calendar_buckets(instant.timestamp(), tz) == expected


# --- ISO weeks at year boundaries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 12, 31),
        date(2027, 1, 1),
        date(2027, 1, 3),
        date(2027, 1, 4),
        date(2024, 12, 30),
        date(2025, 12, 29),
        date(2021, 1, 3),
        date(2020, 12, 31),
        date(2026, 1, 1),
        date(2023, 1, 1),
    ],
)
@pytest.mark.parametrize("tz", [UTC, LA, KATHMANDU], ids=["utc", "la", "kathmandu"])
def test_iso_week_at_year_boundaries_is_the_iso_calendar_week(day: date, tz: ZoneInfo) -> None:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz).timestamp()
    iso = day.isocalendar()
    assert calendar_buckets(noon, tz) == (day.isoformat(), f"{iso.year}-W{iso.week:02d}", f"{day:%Y-%m}")


def test_new_years_days_2027_are_in_week_53_of_2026() -> None:
    assert calendar_buckets(utc(2026, 12, 31, 12), UTC)[1] == "2026-W53"
    assert calendar_buckets(utc(2027, 1, 1, 12), UTC)[1] == "2026-W53"
    assert calendar_buckets(utc(2027, 1, 3, 23, 59), UTC)[1] == "2026-W53"
    assert calendar_buckets(utc(2027, 1, 4, 0, 0), UTC)[1] == "2027-W01"
    assert calendar_buckets(utc(2024, 12, 30, 0, 0), UTC)[1] == "2025-W01"


def test_week_numbers_are_zero_padded() -> None:
    assert calendar_buckets(utc(2026, 1, 5, 12), UTC)[1] == "2026-W02"


# --- bucket_end -------------------------------------------------------------------------------------------------


def test_all_time_bucket_never_ends() -> None:
    assert bucket_end("all", ALL_TIME, UTC) is None


def test_hour_bucket_ends_at_the_next_utc_hour() -> None:
    hour = hour_bucket(utc(2026, 5, 8, 6, 59, 59))
    assert hour == hour_bucket(utc(2026, 5, 8, 6)) == int(utc(2026, 5, 8, 6)) // 3600
    assert hour_bucket(utc(2026, 5, 8, 7)) == hour + 1
    assert bucket_end("hour", str(hour), KATHMANDU) == datetime(2026, 5, 8, 7, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("grain", "bucket", "tz", "end"),
    [
        ("day", "2026-11-22", UTC, utc(2026, 11, 23)),
        ("day", "2026-11-22", LA, utc(2026, 11, 23, 8)),
        ("day", "2026-11-22", KOLKATA, utc(2026, 11, 22, 18, 30)),
        ("day", "2026-11-22", KATHMANDU, utc(2026, 11, 22, 18, 15)),
        ("day", "2026-12-31", UTC, utc(2027, 1, 1)),
        ("day", "2028-02-28", UTC, utc(2028, 2, 29)),
        ("week", "2026-W47", UTC, utc(2026, 11, 23)),
        ("week", "2026-W53", UTC, utc(2027, 1, 4)),
        ("week", "2027-W01", LA, utc(2027, 1, 11, 8)),
        ("week", "2025-W01", KOLKATA, utc(2025, 1, 5, 18, 30)),
        ("month", "2026-01", UTC, utc(2026, 2, 1)),
        ("month", "2026-11", UTC, utc(2026, 12, 1)),
        ("month", "2026-12", UTC, utc(2027, 1, 1)),
        ("month", "2026-12", LA, utc(2027, 1, 1, 8)),
        ("month", "2028-02", KATHMANDU, utc(2028, 2, 29, 18, 15)),
    ],
)
def test_bucket_end_is_local_midnight_after_the_bucket(grain: str, bucket: str, tz: ZoneInfo, end: float) -> None:
    result = bucket_end(grain, bucket, tz)
    assert result is not None and result.utcoffset() is not None
    assert result.timestamp() == end


def test_bucket_end_of_an_unknown_grain_is_an_error() -> None:
    with pytest.raises(ValueError, match="quarter"):
        bucket_end("quarter", "2026-Q4", UTC)


@settings(max_examples=400, deadline=None)
@given(
    epoch=st.integers(min_value=int(utc(1990, 1, 1)), max_value=int(utc(2100, 1, 1))),
    tz=st.sampled_from(ZONES),
    grain=st.sampled_from(["day", "week", "month"]),
)
def test_bucket_end_is_the_first_instant_of_the_next_bucket(epoch: int, tz: ZoneInfo, grain: str) -> None:
    index = {"day": 0, "week": 1, "month": 2}[grain]
    bucket = calendar_buckets(epoch, tz)[index]
    end = bucket_end(grain, bucket, tz)
    assert end is not None
    end_s = end.timestamp()
    assert end_s > epoch
    assert calendar_buckets(end_s - 1, tz)[index] == bucket
    assert calendar_buckets(end_s, tz)[index] != bucket


# --- DST in Europe/Oslo -----------------------------------------------------------------------------------------


def test_oslo_spring_forward_day_has_23_hours() -> None:
    start = bucket_end("day", "2026-03-28", OSLO)
    end = bucket_end("day", "2026-03-29", OSLO)
    assert start is not None and end is not None
    assert start.timestamp() == utc(2026, 3, 28, 23)  # midnight at +01:00
    assert end.timestamp() == utc(2026, 3, 29, 22)  # midnight at +02:00
    assert end.timestamp() - start.timestamp() == 23 * 3600


def test_oslo_fall_back_day_has_25_hours() -> None:
    start = bucket_end("day", "2026-10-24", OSLO)
    end = bucket_end("day", "2026-10-25", OSLO)
    assert start is not None and end is not None
    assert start.timestamp() == utc(2026, 10, 24, 22)
    assert end.timestamp() == utc(2026, 10, 25, 23)
    assert end.timestamp() - start.timestamp() == 25 * 3600


@pytest.mark.parametrize(
    ("instant", "day"),
    [
        (utc(2026, 3, 29, 0, 59, 59), "2026-03-29"),  # 01:59:59 CET, just before the jump
        (utc(2026, 3, 29, 1, 0), "2026-03-29"),  # 03:00 CEST
        (utc(2026, 3, 29, 21, 59, 59), "2026-03-29"),
        (utc(2026, 3, 29, 22, 0), "2026-03-30"),
        (utc(2026, 10, 25, 0, 30), "2026-10-25"),  # 02:30 CEST, first pass
        (utc(2026, 10, 25, 1, 30), "2026-10-25"),  # 02:30 CET, second pass
        (utc(2026, 10, 25, 22, 59, 59), "2026-10-25"),
        (utc(2026, 10, 25, 23, 0), "2026-10-26"),
        (utc(2026, 10, 24, 21, 59, 59), "2026-10-24"),
        (utc(2026, 10, 24, 22, 0), "2026-10-25"),
    ],
)
def test_oslo_dst_days_bucket_instants_by_local_date(instant: float, day: str) -> None:
    assert calendar_buckets(instant, OSLO)[0] == day


def test_oslo_month_and_week_ends_use_the_offset_in_force_at_that_midnight() -> None:
    march = bucket_end("month", "2026-03", OSLO)
    october = bucket_end("month", "2026-10", OSLO)
    week13 = bucket_end("week", "2026-W13", OSLO)  # the week of the spring change ends Monday 30 March
    assert march is not None and october is not None and week13 is not None
    assert march.timestamp() == utc(2026, 3, 31, 22)
    assert october.timestamp() == utc(2026, 10, 31, 23)
    assert week13.timestamp() == utc(2026, 3, 29, 22)


def test_day_before_a_midnight_dst_gap_ends_when_the_next_local_day_begins() -> None:
    # Santiago skips 00:00-01:00 on 6 Sep 2026: that day begins at 01:00 -03:00 = 04:00 UTC
    end = bucket_end("day", "2026-09-05", SANTIAGO)
    assert end is not None and end.timestamp() == utc(2026, 9, 6, 4)
    assert calendar_buckets(utc(2026, 9, 6, 3, 59, 59), SANTIAGO)[0] == "2026-09-05"
    assert calendar_buckets(utc(2026, 9, 6, 4), SANTIAGO)[0] == "2026-09-06"


# --- rolling windows --------------------------------------------------------------------------------------------


def test_rolling_windows_are_24_hours_and_7_days() -> None:
    assert ROLLING_HOURS == {"24h": 24, "7d": 168}


@pytest.mark.parametrize("span", [1, 24, 168])
@pytest.mark.parametrize("minute", [0, 1, 30, 59])
def test_rolling_hour_range_ends_at_the_current_hour(span: int, minute: int) -> None:
    now = utc(2026, 11, 22, 15, minute)
    hours = rolling_hour_range(span, now)
    assert hours[-1] == hour_bucket(now)
    assert list(hours) == sorted(set(hours))
    assert hours.step == 1


@pytest.mark.parametrize("span", [1, 24, 168])
@pytest.mark.parametrize("minute", [0, 1, 30, 59])
def test_rolling_hour_range_is_the_current_hour_and_the_span_minus_one_before_it(span: int, minute: int) -> None:
    # the windows module's definition: "the last span hour buckets, the current one included"
    now = utc(2026, 11, 22, 15, minute, 30)
    current = hour_bucket(now)
    assert list(rolling_hour_range(span, now)) == [current - back for back in reversed(range(span))]


@settings(max_examples=300, deadline=None)
@given(
    now=st.floats(min_value=utc(2000, 1, 1), max_value=utc(2100, 1, 1), allow_nan=False),
    age=st.floats(min_value=0, max_value=200 * 3600, allow_nan=False),
    span=st.sampled_from(sorted(ROLLING_HOURS.values())),
)
def test_rolling_window_covers_between_span_minus_one_hour_and_span_never_more(
    now: float, age: float, span: int
) -> None:
    covered = hour_bucket(now - age) in rolling_hour_range(span, now)
    if age <= (span - 1) * 3600:
        assert covered
    if age >= span * 3600:
        assert not covered


@pytest.mark.parametrize("span", [24, 168])
def test_rolling_hour_range_excludes_hours_that_ended_more_than_span_ago(span: int) -> None:
    now = utc(2026, 11, 22, 15, 30)
    too_old = now - (span + 1) * 3600  # its whole hour ended before now - span
    hours = rolling_hour_range(span, now)
    assert hour_bucket(too_old) not in hours
    assert all(h > hour_bucket(too_old) for h in hours)
    assert len(hours) <= span + 1
