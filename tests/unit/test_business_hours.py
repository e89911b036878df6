"""Business-hours arithmetic: SLA deadlines over nights, weekends, holidays, lunch breaks and DST days."""

from __future__ import annotations

import time as perf
from datetime import date, datetime, time, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from zoneinfo import ZoneInfo

from salespulse.families.business_hours import (
    END_OF_DAY,
    BusinessHours,
    add_business_seconds,
    business_seconds_between,
    is_open,
)

UTC = timezone.utc
OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")
SINGAPORE = ZoneInfo("Asia/Singapore")

# 2026: June 1 is a Monday; Oslo springs forward Sun 2026-03-29 02:00 -> 03:00 and falls back
# Sun 2026-10-25 03:00 -> 02:00.
SPRING_FORWARD = date(2026, 3, 29)
FALL_BACK = date(2026, 10, 25)


def nine_to_five(tz: ZoneInfo = OSLO, holidays: frozenset[date] = frozenset()) -> BusinessHours:
    return BusinessHours(tz=tz, weekly={d: [(time(9), time(17))] for d in range(5)}, holidays=holidays)


def oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO)


def local(dt: datetime, tz: ZoneInfo = OSLO) -> datetime:
    return dt.astimezone(tz).replace(tzinfo=None)


# --- the examples of the metric catalogue ------------------------------------------------------------------------


def test_lead_created_friday_evening_is_due_monday_0905() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 5, 19, 0), 300)
    assert local(due) == datetime(2026, 6, 8, 9, 5)
    assert due.tzinfo == UTC
    assert due == datetime(2026, 6, 8, 7, 5, tzinfo=UTC)


def test_lead_created_two_minutes_before_closing_is_due_next_morning_0903() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 3, 16, 58), 300)
    assert local(due) == datetime(2026, 6, 4, 9, 3)


def test_holiday_on_monday_moves_friday_evening_lead_to_tuesday_0905() -> None:
    hours = nine_to_five(holidays=frozenset({date(2026, 6, 8)}))
    due = add_business_seconds(hours, oslo(2026, 6, 5, 19, 0), 300)
    assert local(due) == datetime(2026, 6, 9, 9, 5)


def test_lead_created_during_opening_hours_is_due_after_plain_sla() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 3, 10, 0, 30), 300)
    assert local(due) == datetime(2026, 6, 3, 10, 5, 30)


def test_lead_created_before_opening_is_due_sla_after_opening() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 3, 6, 12), 300)
    assert local(due) == datetime(2026, 6, 3, 9, 5)


def test_deadline_landing_exactly_on_closing_time_is_closing_time() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 3, 16, 55), 300)
    assert local(due) == datetime(2026, 6, 3, 17, 0)


def test_zero_seconds_returns_start_even_when_closed() -> None:
    start = oslo(2026, 6, 6, 12, 0)  # Saturday
    assert add_business_seconds(nine_to_five(), start, 0) == start


def test_start_in_another_time_zone_is_the_same_instant() -> None:
    start = datetime(2026, 6, 5, 13, 0, tzinfo=NEW_YORK)  # Friday 19:00 in Oslo
    assert local(add_business_seconds(nine_to_five(), start, 300)) == datetime(2026, 6, 8, 9, 5)


def test_sla_longer_than_one_days_opening_spans_several_days() -> None:
    # 20 business hours from Monday 09:00: Monday 8 h, Tuesday 8 h, Wednesday 4 h -> 13:00.
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 1, 9, 0), 20 * 3600)
    assert local(due) == datetime(2026, 6, 3, 13, 0)


def test_sla_of_a_whole_business_week_skips_the_weekend() -> None:
    due = add_business_seconds(nine_to_five(), oslo(2026, 6, 3, 12, 0), 5 * 8 * 3600)
    assert local(due) == datetime(2026, 6, 10, 12, 0)


def test_consecutive_holidays_and_weekend_are_all_skipped() -> None:
    christmas = frozenset({date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 28)})
    # Wednesday 23 Dec 16:59 -> 60 s left that day, 240 s after the break: Tuesday 29 Dec 09:04.
    due = add_business_seconds(nine_to_five(holidays=christmas), oslo(2026, 12, 23, 16, 59), 300)
    assert local(due) == datetime(2026, 12, 29, 9, 4)


def test_holiday_is_a_local_date_of_the_schedule_time_zone() -> None:
    # Monday 8 June in Singapore is closed; a Sunday-evening lead in UTC is already Monday there.
    hours = nine_to_five(tz=SINGAPORE, holidays=frozenset({date(2026, 6, 8)}))
    due = add_business_seconds(hours, datetime(2026, 6, 7, 20, 0, tzinfo=UTC), 300)
    assert local(due, SINGAPORE) == datetime(2026, 6, 9, 9, 5)


# --- split days ---------------------------------------------------------------------------------------------------


LUNCH = BusinessHours(tz=OSLO, weekly={d: [(time(13), time(17)), (time(9), time(12))] for d in range(5)})


def test_lunch_break_pauses_the_sla_clock() -> None:
    due = add_business_seconds(LUNCH, oslo(2026, 6, 2, 11, 58), 300)
    assert local(due) == datetime(2026, 6, 2, 13, 3)


def test_lead_created_during_lunch_is_due_after_lunch() -> None:
    due = add_business_seconds(LUNCH, oslo(2026, 6, 2, 12, 30), 300)
    assert local(due) == datetime(2026, 6, 2, 13, 5)


def test_business_seconds_between_excludes_lunch_break() -> None:
    assert business_seconds_between(LUNCH, oslo(2026, 6, 2, 11, 0), oslo(2026, 6, 2, 14, 0)) == 2 * 3600


def test_business_seconds_between_counts_only_open_time_over_a_weekend() -> None:
    # Friday 16:00 -> Monday 10:00 = 1 h Friday + 1 h Monday.
    assert business_seconds_between(nine_to_five(), oslo(2026, 6, 5, 16), oslo(2026, 6, 8, 10)) == 7200


def test_business_seconds_between_is_zero_for_empty_or_reversed_range() -> None:
    s = oslo(2026, 6, 3, 10)
    assert business_seconds_between(nine_to_five(), s, s) == 0.0
    assert business_seconds_between(nine_to_five(), s, s - timedelta(hours=1)) == 0.0


def test_is_open_follows_the_schedule() -> None:
    assert is_open(LUNCH, oslo(2026, 6, 2, 9, 0))
    assert not is_open(LUNCH, oslo(2026, 6, 2, 12, 0))
    assert not is_open(LUNCH, oslo(2026, 6, 2, 17, 0))
    assert not is_open(LUNCH, oslo(2026, 6, 6, 10, 0))  # Saturday


def test_interval_to_end_of_day_joins_next_days_interval_from_midnight() -> None:
    night = BusinessHours(tz=OSLO, weekly={0: [(time(22), END_OF_DAY)], 1: [(time(0), time(6))]})
    due = add_business_seconds(night, oslo(2026, 6, 1, 23, 0), 3 * 3600)
    assert local(due) == datetime(2026, 6, 2, 2, 0)
    assert business_seconds_between(night, oslo(2026, 6, 1), oslo(2026, 6, 3)) == 8 * 3600


# --- around the clock ---------------------------------------------------------------------------------------------


def test_always_open_default_is_plain_elapsed_time() -> None:
    start = datetime(2026, 3, 28, 23, 30, tzinfo=OSLO)
    due = add_business_seconds(BusinessHours.always(), start, 12.5 * 3600)
    assert due == start.astimezone(UTC) + timedelta(hours=12.5)
    assert business_seconds_between(BusinessHours.always(), start, due) == 12.5 * 3600
    assert BusinessHours.always().is_always_open
    assert not nine_to_five().is_always_open


def test_local_24_7_schedule_with_holiday_is_not_always_open() -> None:
    hours = BusinessHours(tz=OSLO, weekly={d: [(time.min, END_OF_DAY)] for d in range(7)}, holidays=frozenset({date(2026, 6, 3)}))
    assert not hours.is_always_open
    assert business_seconds_between(hours, oslo(2026, 6, 2), oslo(2026, 6, 5)) == 2 * 86400


# --- daylight saving time -----------------------------------------------------------------------------------------


def test_whole_day_on_spring_forward_day_lasts_23_hours() -> None:
    sundays = BusinessHours(tz=OSLO, weekly={6: [(time.min, END_OF_DAY)]})
    assert business_seconds_between(sundays, oslo(2026, 3, 28), oslo(2026, 3, 31)) == 23 * 3600
    due = add_business_seconds(sundays, oslo(2026, 3, 28, 12), 23 * 3600)
    assert local(due) == datetime(2026, 3, 30, 0, 0)


def test_whole_day_on_fall_back_day_lasts_25_hours() -> None:
    sundays = BusinessHours(tz=OSLO, weekly={6: [(time.min, END_OF_DAY)]})
    assert business_seconds_between(sundays, oslo(2026, 10, 24), oslo(2026, 10, 27)) == 25 * 3600


def test_night_shift_across_spring_forward_counts_real_seconds() -> None:
    # 01:00-05:00 local on the spring-forward night is 3 real hours (02:00-03:00 does not exist).
    night = BusinessHours(tz=OSLO, weekly={6: [(time(1), time(5))]})
    assert business_seconds_between(night, oslo(2026, 3, 29), oslo(2026, 3, 30)) == 3 * 3600
    due = add_business_seconds(night, oslo(2026, 3, 29, 0, 30), 90 * 60)
    assert local(due) == datetime(2026, 3, 29, 3, 30)  # 01:00 CET + 90 min = 03:30 CEST


def test_night_shift_across_fall_back_counts_the_repeated_hour_twice() -> None:
    night = BusinessHours(tz=OSLO, weekly={6: [(time(1), time(5))]})
    assert business_seconds_between(night, oslo(2026, 10, 25), oslo(2026, 10, 26)) == 5 * 3600
    first = add_business_seconds(night, oslo(2026, 10, 25, 0, 30), 90 * 60)
    second = add_business_seconds(night, oslo(2026, 10, 25, 0, 30), 150 * 60)
    assert local(first) == local(second) == datetime(2026, 10, 25, 2, 30)
    assert second - first == timedelta(hours=1)
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert second == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET


def test_opening_time_skipped_by_spring_forward_opens_at_the_jump() -> None:
    hours = BusinessHours(tz=OSLO, weekly={6: [(time(2, 30), time(4))]})
    assert hours.open_intervals(SPRING_FORWARD) == [
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 29, 2, 0, tzinfo=UTC))  # 03:00-04:00 CEST
    ]


def test_interval_wholly_inside_skipped_hour_is_closed() -> None:
    hours = BusinessHours(tz=OSLO, weekly={6: [(time(2, 10), time(2, 50))]})
    assert hours.open_intervals(SPRING_FORWARD) == []
    assert business_seconds_between(hours, oslo(2026, 3, 28), oslo(2026, 3, 30)) == 0.0
    # The next Sunday opens as usual, so a deadline still comes.
    due = add_business_seconds(hours, oslo(2026, 3, 28), 60)
    assert local(due) == datetime(2026, 4, 5, 2, 11)


def test_sla_across_dst_weekend_lands_at_local_opening_time() -> None:
    # Friday 27 March 16:58 CET (15:58 UTC) -> Monday 30 March 09:03 CEST (07:03 UTC).
    due = add_business_seconds(nine_to_five(), oslo(2026, 3, 27, 16, 58), 300)
    assert local(due) == datetime(2026, 3, 30, 9, 3)
    assert due == datetime(2026, 3, 30, 7, 3, tzinfo=UTC)


# --- input validation ---------------------------------------------------------------------------------------------


def test_naive_start_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_seconds(nine_to_five(), datetime(2026, 6, 1, 9), 300)


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf")])
def test_negative_or_non_finite_seconds_are_rejected(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        add_business_seconds(nine_to_five(), oslo(2026, 6, 1, 9), seconds)


def test_never_open_schedule_raises_instead_of_looping() -> None:
    with pytest.raises(ValueError, match="never open"):
        add_business_seconds(BusinessHours(tz=OSLO, weekly={}), oslo(2026, 6, 1), 1)
    assert business_seconds_between(BusinessHours(tz=OSLO, weekly={2: []}), oslo(2026, 6, 1), oslo(2026, 7, 1)) == 0.0


@pytest.mark.parametrize(
    "intervals",
    [
        [(time(17), time(9))],
        [(time(9), time(9))],
        [(time(9), time(13)), (time(12), time(17))],
        [(END_OF_DAY, END_OF_DAY)],
    ],
)
def test_backwards_empty_or_overlapping_intervals_are_rejected(intervals: list[tuple[time, time]]) -> None:
    with pytest.raises(ValueError, match="weekday 0"):
        BusinessHours(tz=OSLO, weekly={0: intervals})


def test_weekday_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="weekday"):
        BusinessHours(tz=OSLO, weekly={7: [(time(9), time(17))]})


def test_schedules_with_equal_content_are_equal_and_hashable() -> None:
    assert nine_to_five() == nine_to_five()
    assert hash(nine_to_five()) == hash(nine_to_five())
    assert nine_to_five() != nine_to_five(holidays=frozenset({date(2026, 6, 8)}))


# --- performance --------------------------------------------------------------------------------------------------


def test_hundred_thousand_deadlines_are_fast() -> None:
    hours = BusinessHours(tz=OSLO, weekly={d: [(time(9), time(12)), (time(13), time(17))] for d in range(5)})
    start = oslo(2026, 1, 1)
    began = perf.perf_counter()
    for i in range(100_000):
        add_business_seconds(hours, start + timedelta(seconds=i * 97), 300)
    assert perf.perf_counter() - began < 5.0  # ~0.5 s on a laptop; a per-minute loop would take minutes


def test_cost_grows_with_days_not_with_seconds() -> None:
    # A one-year SLA walks ~365 days, not 31 million seconds.
    began = perf.perf_counter()
    due = add_business_seconds(nine_to_five(), oslo(2026, 1, 1), 365 * 8 * 3600)
    assert perf.perf_counter() - began < 1.0
    assert business_seconds_between(nine_to_five(), oslo(2026, 1, 1), due) == 365 * 8 * 3600


# --- properties ---------------------------------------------------------------------------------------------------

ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "Europe/Oslo",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",  # 30-minute DST shift
        "America/Santiago",  # DST changes at local midnight
        "Pacific/Apia",  # skipped the whole of 2011-12-30
        "America/St_Johns",
    )
]


@st.composite
def day_intervals(draw: st.DrawFn) -> list[tuple[time, time]]:
    """Sorted, non-overlapping intervals on a 15-minute grid, possibly ending at 24:00."""
    marks = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    if len(marks) % 2:
        marks = marks[:-1]

    def at(quarter: int) -> time:
        return END_OF_DAY if quarter == 96 else time(quarter // 4, 15 * (quarter % 4))

    return [(at(a), at(b)) for a, b in zip(marks[::2], marks[1::2])]


@st.composite
def schedules(draw: st.DrawFn) -> BusinessHours:
    tz = draw(st.sampled_from(ZONES))
    weekly = draw(st.dictionaries(st.integers(0, 6), day_intervals(), max_size=7))
    assume(any(weekly.values()))
    holidays = draw(st.frozensets(st.dates(date(2010, 1, 1), date(2031, 12, 31)), max_size=5))
    return BusinessHours(tz=tz, weekly=weekly, holidays=holidays)


instants = st.datetimes(datetime(2010, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC))
# Up to ~3 weeks of open time, with sub-second parts.
durations = st.floats(0, 3 * 7 * 86400, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(hours=schedules(), start=instants, seconds=durations)
def test_business_seconds_between_inverts_add_business_seconds(hours: BusinessHours, start: datetime, seconds: float) -> None:
    due = add_business_seconds(hours, start, seconds)
    assert due >= start
    assert abs(business_seconds_between(hours, start, due) - seconds) <= 1e-6


@settings(max_examples=200, deadline=None)
@given(hours=schedules(), start=instants, a=durations, b=durations)
def test_deadline_is_monotonic_in_seconds(hours: BusinessHours, start: datetime, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert add_business_seconds(hours, start, lo) <= add_business_seconds(hours, start, hi)


@settings(max_examples=200, deadline=None)
@given(hours=schedules(), start=instants, a=durations, b=durations)
def test_deadlines_compose(hours: BusinessHours, start: datetime, a: float, b: float) -> None:
    # a seconds, then b more from that deadline, is the same instant as a + b at once (whole milliseconds: exact).
    a, b = round(a, 3), round(b, 3)
    chained = add_business_seconds(hours, add_business_seconds(hours, start, a), b)
    assert chained == add_business_seconds(hours, start, a + b)


@settings(max_examples=200, deadline=None)
@given(hours=schedules(), a=instants, ab=durations, bc=durations)
def test_business_seconds_between_is_additive(hours: BusinessHours, a: datetime, ab: float, bc: float) -> None:
    b = a + timedelta(seconds=ab)
    c = b + timedelta(seconds=bc)
    whole = business_seconds_between(hours, a, c)
    parts = business_seconds_between(hours, a, b) + business_seconds_between(hours, b, c)
    assert abs(whole - parts) <= 1e-6
    assert 0 <= whole <= (c - a).total_seconds()


# --- an independent oracle: minute by minute on the wall clock ---------------------------------------------------


def _wall_clock_open(hours: BusinessHours, at: datetime) -> bool:
    wall = at.astimezone(hours.tz)
    if wall.date() in hours.holidays:
        return False
    t = wall.time().replace(tzinfo=None)
    return any(a <= t and (b == END_OF_DAY or t < b) for a, b in hours.weekly.get(wall.weekday(), ()))


@settings(max_examples=60, deadline=None)
@given(
    tz=st.sampled_from([OSLO, NEW_YORK, ZoneInfo("Australia/Lord_Howe")]),
    weekly=st.dictionaries(
        st.integers(0, 6),
        st.lists(st.tuples(st.integers(4 * 4, 12 * 4), st.integers(1, 40)), max_size=1).map(
            lambda xs: [(time(a // 4, 15 * (a % 4)), time((a + n) // 4, 15 * ((a + n) % 4))) for a, n in xs]
        ),
    ),
    day=st.sampled_from([SPRING_FORWARD, FALL_BACK, date(2026, 3, 8), date(2026, 11, 1), date(2026, 4, 5), date(2026, 6, 3)]),
    offset_minutes=st.integers(-3 * 1440, 0),
)
def test_business_seconds_between_matches_minute_by_minute_wall_clock(
    tz: ZoneInfo, weekly: dict[int, list[tuple[time, time]]], day: date, offset_minutes: int
) -> None:
    # Daytime schedules (04:00-22:00) never touch a DST jump, so "open" is simply "the wall clock
    # reads inside an interval" — counted here minute by minute around DST weekends.
    hours = BusinessHours(tz=tz, weekly=weekly)
    start = datetime.combine(day, time(), tzinfo=UTC) + timedelta(minutes=offset_minutes)
    end = start + timedelta(days=4)
    minutes = sum(_wall_clock_open(hours, start + timedelta(minutes=m)) for m in range(4 * 1440))
    assert business_seconds_between(hours, start, end) == minutes * 60
