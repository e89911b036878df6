"""The batch processor over a plain dict table: counting, dedup, replay after a crash, dead letters, expiry.

The dict stands for the changelogged Faust table. A "crash" is modelled by building a new processor over
(a copy of) the dict and re-processing records from the last committed position, as Kafka would
redeliver them.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salespulse.families.activity.rules import Activity, activity_of, count_activities, with_rollups
from salespulse.families.windows import hour_bucket, rolling_hour_range
from salespulse.models.events import EventAdapter
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex, decode_record, digest, encode_record
from salespulse.engine.faust.tables import decode_rows, partition_rows
from salespulse.engine.processor import BatchProcessor, Record, dead_letter_value
from tests.unit.log_support import records

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
DAY = 86400.0
HOUR = 3600.0
TEAMS = {"anna": "north", "ben": "north", "cleo": "south"}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def ev(event_id: str, event_type: str = "call.logged", at: float = NOW - HOUR, **fields: Any) -> dict[str, Any]:
    """A valid event dict; activity types get their required fields filled in."""
    base: dict[str, Any] = {"event_id": event_id, "type": event_type, "occurred_at": iso(at), "lead_id": "L1"}
    if event_type == "call.logged":
        base |= {"rep_id": "anna", "outcome": "connected"}
    elif event_type == "email.sent":
        base |= {"rep_id": "anna", "email_id": f"m-{event_id}"}
    elif event_type in ("meeting.booked", "meeting.held"):
        base |= {"rep_id": "anna", "meeting_id": f"g-{event_id}"}
    elif event_type == "activity.logged":
        base |= {"rep_id": "anna", "kind": "visit"}
    elif event_type.startswith("email."):
        base |= {"email_id": f"m-{event_id}"}
    return base | fields


class Worker:
    """One processor (dedup + activity family) over a table, as the Faust worker builds it."""

    def __init__(
        self,
        table: dict[str, bytes] | None = None,
        tz: ZoneInfo = UTC,
        retention_s: float = 35 * DAY,
        horizon_s: float = 72 * HOUR,
        team_of_rep: dict[str, str] | None = None,
    ) -> None:
        self.table: dict[str, bytes] = {} if table is None else table
        self.dead: list[tuple[Record, str]] = []
        self.family = ActivityFamily(
            CellStore(self.table, "activity"), tz, retention_s, team_of_rep=TEAMS if team_of_rep is None else team_of_rep
        )
        self.dedup = DedupIndex(self.table, horizon_s)
        self.processor = BatchProcessor(self.dedup, [self.family], lambda r, why: self.dead.append((r, why)))

    def process(self, batch: Sequence[Record], now: float = NOW) -> Any:
        return self.processor.process(batch, now)

    def cell(self, partition: int, name: str) -> dict[str, Any] | None:
        raw = self.table.get(f"{partition}|activity|{name}")
        return None if raw is None else orjson.loads(raw)


def table_cells(table: dict[str, bytes]) -> dict[tuple[int, str, str], dict[str, Any]]:
    """(partition, grain, bucket) -> decoded activity cell, straight from the durable table."""
    out = {}
    for key, raw in table.items():
        partition, prefix, rest = key.split("|", 2)
        if prefix == "activity":
            grain, bucket = rest.split("|", 1)
            out[(int(partition), grain, bucket)] = orjson.loads(raw)
    return out


def rep_counts(table: dict[str, bytes], grain: str = "all", bucket: str | None = None) -> dict[str, dict[str, int]]:
    """Per rep, the counts of all partitions' cells of ``grain`` (and ``bucket`` if given), summed."""
    total: dict[str, dict[str, int]] = {}
    for (_p, g, b), cell in table_cells(table).items():
        if g != grain or (bucket is not None and b != bucket):
            continue
        for rep, counts in cell.get("rep", {}).items():
            into = total.setdefault(rep, {})
            for name, n in counts.items():
                into[name] = into.get(name, 0) + n
    return {rep: {f: n for f, n in counts.items() if n} for rep, counts in total.items()}


def expected_per_rep(events: Iterable[dict[str, Any]], team_of_rep: dict[str, str] = TEAMS) -> dict[str, dict[str, int]]:
    """``count_activities`` over the distinct events (first of each event_id)."""
    return count_activities(distinct_activities(events, team_of_rep))


def distinct_activities(events: Iterable[dict[str, Any]], team_of_rep: dict[str, str] = TEAMS) -> list[Activity]:
    seen: set[str] = set()
    out = []
    for item in events:
        if item["event_id"] in seen:
            continue
        seen.add(item["event_id"])
        activity = activity_of(EventAdapter.validate_python(item), team_of_rep)
        if activity is not None:
            out.append(activity)
    return out


# --- counting ---------------------------------------------------------------------------------------------------


def test_counts_per_rep_team_and_window() -> None:
    w = Worker()
    today, yesterday = NOW - HOUR, NOW - DAY
    batch = records(
        0,
        [
            ev("c1", at=today),
            ev("c2", at=today, outcome="no_answer"),
            ev("c3", at=yesterday, outcome="no_answer", rep_id="cleo"),
            ev("m1", "email.sent", at=today),
            ev("b1", "meeting.booked", at=yesterday, rep_id="ben", team="partners"),
            ev("l1", "lead.created", at=today),
            ev("o1", "email.opened", at=today),
        ],
    )
    stats = w.process(batch)
    assert (stats.processed, stats.duplicates, stats.dead_lettered) == (7, 0, 0)
    assert stats.by_type == {"call.logged": 3, "email.sent": 1, "meeting.booked": 1, "lead.created": 1, "email.opened": 1}

    all_time = w.cell(0, "all|-")
    assert all_time["rep"] == {
        "anna": {"call:connected": 1, "call:no_answer": 1, "email_sent": 1},
        "cleo": {"call:no_answer": 1},
        "ben": {"meeting_booked": 1},
    }
    assert all_time["team"] == {
        "north": {"call:connected": 1, "call:no_answer": 1, "email_sent": 1},
        "south": {"call:no_answer": 1},
        "partners": {"meeting_booked": 1},  # the event's own team wins over the configured one
    }
    assert all_time["wm"] == 6

    assert w.cell(0, "day|2026-11-22")["rep"] == {"anna": {"call:connected": 1, "call:no_answer": 1, "email_sent": 1}}
    assert w.cell(0, "day|2026-11-21")["rep"] == {"cleo": {"call:no_answer": 1}, "ben": {"meeting_booked": 1}}
    assert w.cell(0, "week|2026-W47")["team"]["north"] == {"call:connected": 1, "call:no_answer": 1, "email_sent": 1}
    assert w.cell(0, "month|2026-11")["rep"]["ben"] == {"meeting_booked": 1}
    assert w.cell(0, f"hour|{hour_bucket(today)}")["rep"]["anna"]["call:connected"] == 1
    assert w.cell(0, f"hour|{hour_bucket(yesterday)}")["rep"]["cleo"] == {"call:no_answer": 1}


def test_rendered_partials_carry_rollups_watermark_and_window_names() -> None:
    w = Worker()
    w.process(records(0, [ev("c1"), ev("c2", outcome="busy"), ev("m1", "email.sent")], first_offset=40))
    partials = {(p.record["scope"], p.record["id"], p.record["window"]): p for p in w.family.render({0}, NOW)}
    anna_all = partials[("rep", "anna", "all")]
    assert anna_all.fields == {"call:connected": 1, "call:busy": 1, "call": 2, "email_sent": 1, "total": 3}
    assert anna_all.watermark == 42
    assert anna_all.ttl_s == 0
    assert anna_all.redis_key == "salespulse:activity:rep:anna:all"
    assert anna_all.topic_key == "rep:anna:all:p0"
    assert partials[("team", "north", "day:2026-11-22")].fields["total"] == 3
    assert partials[("rep", "anna", "rolling:24h")].fields["total"] == 3
    assert partials[("rep", "anna", "week:2026-W47")].ttl_s > 0
    assert w.family.render({0}, NOW) == []  # nothing is dirty any more


def test_calendar_cells_use_the_configured_time_zone() -> None:
    w = Worker(tz=ZoneInfo("America/Los_Angeles"))
    at = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc).timestamp()  # 22 Nov 19:00 in LA
    w.process(records(0, [ev("c1", at=at)]), now=at + HOUR)
    assert w.cell(0, "day|2026-11-22") is not None
    assert w.cell(0, "day|2026-11-23") is None


# --- duplicates and replays -------------------------------------------------------------------------------------


def test_redelivered_event_id_at_a_new_offset_is_counted_once() -> None:
    w = Worker()
    first = w.process(records(0, [ev("c1"), ev("c2"), ev("c1")]))
    assert (first.processed, first.duplicates) == (2, 1)
    later = w.process(records(0, [ev("c1"), ev("c3")], first_offset=3))
    assert (later.processed, later.duplicates) == (1, 1)
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 3}
    assert w.family.counter_totals({0}) == {("anna", "north", "call", "connected"): 3}


def test_redelivery_is_recognised_after_a_restart_from_the_table() -> None:
    w = Worker()
    w.process(records(0, [ev("c1"), ev("c2")]))
    restarted = Worker(w.table)
    stats = restarted.process(records(0, [ev("c2"), ev("c3")], first_offset=2))
    assert (stats.processed, stats.duplicates) == (1, 1)
    assert restarted.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 3}


def test_replay_of_the_same_offsets_after_a_crash_counts_nothing_twice() -> None:
    events = [ev("c1"), ev("c2", outcome="busy"), ev("m1", "email.sent"), ev("c1"), ev("o1", "email.opened")]
    w = Worker()
    w.process(records(0, events))
    before = dict(w.table)
    # the crash: every changelog write landed, the offset commit did not; a new worker replays the batch
    replayer = Worker(dict(w.table))
    replayer.process(records(0, events))
    assert rep_counts(replayer.table) == expected_per_rep(events)
    assert table_cells(replayer.table) == table_cells(before)
    assert replayer.family.counter_totals({0}) == w.family.counter_totals({0})


def _writes_of(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _landed(before: dict[str, bytes], after: dict[str, bytes], keys: Iterable[str]) -> dict[str, bytes]:
    """The table after a crash in which only ``keys`` of the batch's writes reached the changelog."""
    table = dict(before)
    for key in keys:
        if key in after:
            table[key] = after[key]
        else:
            table.pop(key, None)
    return table


def test_replay_where_only_some_of_the_batchs_writes_landed_counts_each_event_once() -> None:
    committed = [ev("c1", at=NOW - 2 * DAY), ev("c2", outcome="no_answer", at=NOW - 3 * HOUR), ev("m1", "email.sent")]
    crashed = [
        ev("c3", at=NOW - 2 * DAY),  # updates an existing day cell (reverted -> older value)
        ev("c4", at=NOW - 3 * HOUR, outcome="voicemail", rep_id="cleo"),
        ev("b1", "meeting.booked", at=NOW - 10 * HOUR),  # creates new cells (reverted -> missing)
        ev("c2", outcome="no_answer", at=NOW - 3 * HOUR),  # a redelivery inside the crashed batch
        ev("a1", "activity.logged", kind="Visit", at=NOW - 30 * DAY),
    ]
    w = Worker()
    w.process(records(0, committed))
    before = dict(w.table)
    w.process(records(0, crashed, first_offset=len(committed)))
    after = dict(w.table)
    writes = _writes_of(before, after)
    assert len(writes) >= 6  # the dedup record and several cells: the subsets below are meaningful
    expected_all = expected_per_rep(committed + crashed)
    for size in range(len(writes) + 1):
        for subset in itertools.combinations(writes, size):
            replayer = Worker(_landed(before, after, subset))
            replayer.process(records(0, crashed, first_offset=len(committed)))
            assert rep_counts(replayer.table) == expected_all, subset
            assert table_cells(replayer.table) == table_cells(after), subset


def test_replay_read_in_a_longer_batch_still_remembers_the_ids_of_the_first_attempt() -> None:
    # attempt 1 reads offsets 0..2 and crashes after its writes, before the commit; attempt 2 reads 0..4 in one
    # batch (take_events batches need not repeat) and commits; later the partition moves to another worker.
    events = [ev(f"c{i}") for i in range(5)]
    w = Worker()
    w.process(records(0, events[:3]))
    replayer = Worker(dict(w.table))
    replayer.process(records(0, events))
    assert rep_counts(replayer.table) == expected_per_rep(events)
    new_owner = Worker(dict(replayer.table))
    assert new_owner.processor.ensure_loaded(0)
    assert new_owner.dedup.size(0) == 5, "the durable dedup records must still hold every id seen"
    stats = new_owner.process(records(0, [ev("c1")], first_offset=5))  # the CRM retries c1
    assert stats.duplicates == 1
    assert rep_counts(new_owner.table) == expected_per_rep(events)


def test_replay_read_in_a_shorter_batch_counts_each_event_once() -> None:
    events = [ev(f"c{i}") for i in range(6)] + [ev("c2")]
    w = Worker()
    w.process(records(0, events))
    replayer = Worker(dict(w.table))
    replayer.process(records(0, events[:2]))
    replayer.process(records(0, events[2:], first_offset=2))
    assert rep_counts(replayer.table) == expected_per_rep(events)


# --- dead letters -----------------------------------------------------------------------------------------------


def test_malformed_record_in_the_middle_is_dead_lettered_naming_the_field_and_its_neighbours_count() -> None:
    bad = ev("c2")
    del bad["outcome"]
    batch = records(0, [ev("c1"), bad, ev("c3", outcome="busy")])
    w = Worker()
    stats = w.process(batch)
    assert (stats.processed, stats.dead_lettered) == (2, 1)
    assert len(w.dead) == 1
    record, reason = w.dead[0]
    assert record == batch[1]
    assert reason.startswith("outcome:")
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 1, "call:busy": 1}
    assert w.cell(0, "all|-")["wm"] == 2


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b"{not json", "(event):"),
        (orjson.dumps(ev("x", outcome="answered")), "outcome:"),
        (orjson.dumps(ev("x", type="call.made")), "type:"),
        (orjson.dumps(ev("x", occurred_at="2026-11-22T10:00:00")), "occurred_at:"),
        (orjson.dumps(ev("x", colour="blue")), "colour:"),
        (orjson.dumps(ev("x") | {"event_id": "e" * 129}), "event_id:"),
    ],
    ids=["json", "enum", "type", "naive-time", "extra", "too-long"],
)
def test_dead_letter_reason_names_what_is_wrong(raw: bytes, named: str) -> None:
    w = Worker()
    w.process([(0, 0, raw), (0, 1, orjson.dumps(ev("ok")))])
    assert [(r, why.split(" ")[0]) for r, why in w.dead] == [((0, 0, raw), named)]
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 1}


def test_dead_letter_value_carries_reason_position_and_raw_text() -> None:
    value = orjson.loads(dead_letter_value((3, 17, b'{"bad": true}'), "type: missing", now=123.0))
    assert value == {"reason": "type: missing", "partition": 3, "offset": 17, "raw": '{"bad": true}', "failed_at": 123.0}


def test_event_outside_the_plausible_years_is_dead_lettered_naming_occurred_at_and_counted_nowhere() -> None:
    far = ev("x", occurred_at="9999-12-31T12:00:00+00:00")
    w = Worker()
    stats = w.process(records(0, [ev("c1"), far, ev("c2")]))
    assert stats.dead_lettered == 1
    assert w.dead[0][1].startswith("occurred_at:")
    assert rep_counts(w.table) == {"anna": {"call:connected": 2}}, "a dead-lettered event must not be counted"
    assert rep_counts(w.table, "hour") == {"anna": {"call:connected": 2}}


def test_event_that_fails_in_a_family_is_dead_lettered_and_its_neighbours_count() -> None:
    w = Worker()
    original = w.family.apply

    def failing_apply(partition: int, offset: int, event: Any, now: float, arrived: float | None = None) -> bool:
        if event.event_id == "x":
            raise RuntimeError("boom")
        return original(partition, offset, event, now, arrived)

    w.family.apply = failing_apply  # type: ignore[method-assign]
    stats = w.process(records(0, [ev("c1"), ev("x"), ev("c2")]))
    assert stats.dead_lettered == 1 and stats.processed == 2
    assert w.dead[0][1] == "processing error: RuntimeError: boom"
    assert rep_counts(w.table) == {"anna": {"call:connected": 2}}


def test_an_event_failing_in_one_family_stays_in_the_families_before_it_and_dead_letters_keep_record_order() -> None:
    """Families apply a batch one after the other: the failing event is kept by the families that ran before the
    failing one (as when it was applied event by event), skipped by those after, dead-lettered once, in record order."""
    table: dict[str, bytes] = {}
    dead: list[tuple[Record, str]] = []
    first, second, third = (
        ActivityFamily(CellStore(table, prefix), UTC, 35 * DAY, team_of_rep=TEAMS) for prefix in ("a1", "a2", "a3")
    )
    original = second.apply

    def failing_apply(partition: int, offset: int, event: Any, now: float, arrived: float | None = None) -> bool:
        if event.event_id == "x":
            raise RuntimeError("boom")
        return original(partition, offset, event, now, arrived)

    second.apply = failing_apply  # type: ignore[method-assign]
    processor = BatchProcessor(DedupIndex(table, 72 * HOUR), [first, second, third], lambda r, why: dead.append((r, why)))
    batch = records(0, [ev("c1"), ev("x"), ev("c2")])
    batch.append((0, 3, b"{not json"))
    stats = processor.process(batch, NOW)
    assert (stats.processed, stats.dead_lettered) == (2, 2)
    assert [(record[1], why.split(":")[0]) for record, why in dead] == [(1, "processing error"), (3, "(event)")]

    def counted(prefix: str) -> dict[str, int]:
        return orjson.loads(table[f"0|{prefix}|all|-"])["rep"]["anna"]

    assert counted("a1") == {"call:connected": 3}, "the family before the failing one applied it"
    assert counted("a2") == {"call:connected": 2}
    assert counted("a3") == {"call:connected": 2}, "the family after the failing one skipped it"


# --- partitions -------------------------------------------------------------------------------------------------


def test_events_of_two_partitions_in_one_batch_write_cells_under_their_own_partition() -> None:
    w = Worker()
    batch = [
        (0, 10, orjson.dumps(ev("a1"))),
        (5, 3, orjson.dumps(ev("b1", rep_id="cleo", lead_id="L2"))),
        (0, 11, orjson.dumps(ev("a2", "email.sent"))),
        (5, 4, orjson.dumps(ev("b2", rep_id="cleo", lead_id="L2", outcome="busy"))),
    ]
    w.process(batch)
    assert w.cell(0, "all|-")["rep"] == {"anna": {"call:connected": 1, "email_sent": 1}}
    assert w.cell(0, "all|-")["wm"] == 11
    assert w.cell(5, "all|-")["rep"] == {"cleo": {"call:connected": 1, "call:busy": 1}}
    assert w.cell(5, "all|-")["wm"] == 4
    assert {k.split("|")[0] for k in w.table} == {"0", "5"}
    assert "0|dedup|10" in w.table and "5|dedup|3" in w.table
    assert set(decode_record(w.table["0|dedup|10"])[1]) == {digest("a1"), digest("a2")}
    assert set(decode_record(w.table["5|dedup|3"])[1]) == {digest("b1"), digest("b2")}
    assert w.processor.loaded == {0, 5}
    assert {p.partition for p in w.family.render({0, 5}, NOW)} == {0, 5}
    assert {p.partition for p in w.family.render({5}, NOW)} == set()


def test_same_event_id_in_two_partitions_is_not_a_duplicate_of_the_other() -> None:
    w = Worker()
    stats = w.process([(0, 0, orjson.dumps(ev("same"))), (1, 0, orjson.dumps(ev("same")))])
    assert stats.duplicates == 0
    assert w.family.counter_totals({0, 1}) == {("anna", "north", "call", "connected"): 2}
    assert w.family.counter_totals({1}) == {("anna", "north", "call", "connected"): 1}


def test_a_dropped_partition_is_reloaded_from_the_table() -> None:
    w = Worker()
    w.process(records(2, [ev("c1"), ev("c2")]))
    w.processor.drop_partition(2)
    assert w.family.counter_totals({2}) == {}
    stats = w.process(records(2, [ev("c1"), ev("c3")], first_offset=2))
    assert (stats.processed, stats.duplicates) == (1, 1)
    assert w.family.counter_totals({2}) == {("anna", "north", "call", "connected"): 3}


# --- expiry -----------------------------------------------------------------------------------------------------


def test_dedup_records_expire_after_the_horizon_and_the_index_forgets_them() -> None:
    w = Worker(horizon_s=HOUR)
    w.process(records(0, [ev("c1"), ev("c2")]), now=NOW)
    assert w.dedup.size(0) == 2
    assert "0|dedup|0" in w.table
    # within the horizon a redelivery is a duplicate
    assert w.process(records(0, [ev("c1")], first_offset=2), now=NOW + 1800).duplicates == 1
    # past the horizon the next batch's expiry forgets the ids and deletes their record
    w.process(records(0, [ev("c3")], first_offset=3), now=NOW + HOUR + 120)
    assert "0|dedup|0" not in w.table
    assert w.dedup.size(0) == 1  # only c3 remains
    assert Worker(dict(w.table), horizon_s=HOUR).dedup.load_partition(0) == 3
    # a redelivery beyond the horizon is, as documented, counted again
    assert w.process(records(0, [ev("c1")], first_offset=4), now=NOW + HOUR + 240).processed == 1


def test_dedup_expire_keeps_records_younger_than_the_horizon() -> None:
    table: dict[str, bytes] = {}
    dedup = DedupIndex(table, horizon_s=100)
    dedup.load_partition(0)
    assert dedup.admit(0, "a", 0) and dedup.admit(0, "b", 1)
    assert dedup.write_pending(0, now=1000)
    assert dedup.admit(0, "c", 2)
    assert dedup.write_pending(0, now=1050)
    assert not dedup.write_pending(0, now=1060)  # nothing new
    assert dedup.expire(0, now=1099) == 0
    assert dedup.expire(0, now=1120) == 2
    assert set(table) == {"0|dedup|2"}
    assert not dedup.admit(0, "c", 9)
    assert dedup.admit(0, "a", 9)


def test_cells_of_windows_older_than_retention_are_expired() -> None:
    w = Worker(retention_s=2 * DAY)
    event_day = datetime(2026, 11, 10, 12, tzinfo=timezone.utc).timestamp()
    w.process(records(0, [ev("c1", at=event_day)]), now=event_day + HOUR)
    assert w.cell(0, "day|2026-11-10") is not None
    assert w.cell(0, f"hour|{hour_bucket(event_day)}") is not None
    # the day ended at 11 Nov 00:00; with 2 days of retention it is gone after 13 Nov 00:00
    later = datetime(2026, 11, 13, 0, 30, tzinfo=timezone.utc).timestamp()
    w.process(records(0, [ev("c2", at=later)], first_offset=1), now=later)
    assert w.cell(0, "day|2026-11-10") is None
    assert w.family.cells.get(0, "day|2026-11-10") is None
    assert w.cell(0, "week|2026-W46") is not None  # that week ends 16 Nov: still kept
    assert w.cell(0, "month|2026-11") is not None
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 2}
    # hour cells go once older than the longest rolling span (7 days) ...
    week_later = event_day + 170 * HOUR
    w.process(records(0, [ev("c3", at=week_later)], first_offset=2), now=week_later)
    assert w.cell(0, f"hour|{hour_bucket(event_day)}") is None
    assert w.cell(0, "week|2026-W46") is not None
    # ... and the week once 2 days after its end (16 Nov 00:00) have passed
    after_week = datetime(2026, 11, 18, 0, 5, tzinfo=timezone.utc).timestamp()
    w.process(records(0, [ev("c4", at=after_week)], first_offset=3), now=after_week)
    assert w.cell(0, "week|2026-W46") is None
    assert w.cell(0, "month|2026-11") is not None
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 4}


def test_late_event_for_an_expired_window_counts_all_time_but_recreates_no_old_cell() -> None:
    w = Worker(retention_s=2 * DAY)
    w.process(records(0, [ev("now", at=NOW)]), now=NOW)  # runs this minute's expiry
    w.process(records(0, [ev("late", at=NOW - 10 * DAY)], first_offset=1), now=NOW + 1)  # no expiry pass here
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 2}
    assert w.cell(0, "day|2026-11-12") is None
    assert w.cell(0, f"hour|{hour_bucket(NOW - 10 * DAY)}") is None
    assert w.cell(0, "month|2026-11")["rep"]["anna"] == {"call:connected": 2}  # November is still kept
    assert not [p for p in w.family.render({0}, NOW + 1) if p.record["window"] == "day:2026-11-12"]


# --- rolling windows --------------------------------------------------------------------------------------------


def _rolling(w: Worker, rep: str = "anna") -> dict[str, dict[str, int]]:
    return {
        p.record["window"]: p.fields
        for p in w.family.render(w.processor.loaded, NOW)
        if p.record["scope"] == "rep" and p.record["id"] == rep and p.record["window"].startswith("rolling:")
    }


def test_rolling_24h_excludes_hours_older_than_24_hours() -> None:
    w = Worker()
    w.process(
        records(
            0,
            [
                ev("h1", at=NOW - 1 * HOUR),
                ev("h2", at=NOW - 2 * HOUR, outcome="busy"),
                ev("h25", at=NOW - 25 * HOUR),
                ev("h30", at=NOW - 30 * HOUR),
                ev("h100", at=NOW - 100 * HOUR, outcome="busy"),
                ev("h200", at=NOW - 200 * HOUR),  # older than 7 days: in no rolling window
            ],
        )
    )
    rolling = _rolling(w)
    assert rolling["rolling:24h"] == with_rollups({"call:connected": 1, "call:busy": 1})
    assert rolling["rolling:7d"] == with_rollups({"call:connected": 3, "call:busy": 2})
    assert w.cell(0, "all|-")["rep"]["anna"] == {"call:connected": 4, "call:busy": 2}


def test_rolling_windows_shrink_as_time_passes_without_new_events() -> None:
    w = Worker()
    w.process(records(0, [ev("h1", at=NOW - HOUR), ev("h20", at=NOW - 20 * HOUR)]))
    w.family.render({0}, NOW)
    w.family.mark_rolling_dirty({0})
    later = {
        p.record["window"]: p.fields["total"]
        for p in w.family.render({0}, NOW + 10 * HOUR)
        if p.record["scope"] == "rep" and p.record["window"].startswith("rolling")
    }
    assert later == {"rolling:24h": 1, "rolling:7d": 2}


@pytest.mark.parametrize("minute", [0, 30, 59])
def test_rolling_24h_covers_23_hours_always_and_24_hours_never(minute: int) -> None:
    now = datetime(2026, 11, 22, 15, minute, tzinfo=timezone.utc).timestamp()
    w = Worker()
    w.process(records(0, [ev("in", at=now - 23 * HOUR), ev("out", at=now - 24 * HOUR, outcome="busy")]), now=now)
    rolling = {
        p.record["window"]: p.fields
        for p in w.family.render({0}, now)
        if p.record["scope"] == "rep" and p.record["window"].startswith("rolling:")
    }
    assert rolling["rolling:24h"] == with_rollups({"call:connected": 1})
    assert rolling["rolling:7d"] == with_rollups({"call:connected": 1, "call:busy": 1})


# --- properties -------------------------------------------------------------------------------------------------

REPS = ["anna", "ben", "cleo", "dev"]
PARTITIONS = 3


@st.composite
def activity_event(draw: st.DrawFn, index: int) -> dict[str, Any]:
    event_type = draw(
        st.sampled_from(
            ["call.logged", "call.logged", "email.sent", "meeting.booked", "meeting.held", "activity.logged",
             "email.opened", "lead.created"]
        )
    )
    fields: dict[str, Any] = {"lead_id": f"L{draw(st.integers(0, 7))}"}
    if event_type not in ("email.opened", "lead.created"):
        fields["rep_id"] = draw(st.sampled_from(REPS))
    if draw(st.booleans()):
        fields["team"] = draw(st.sampled_from(["north", "south", "east"]))
    if event_type == "call.logged":
        fields["outcome"] = draw(st.sampled_from(["connected", "no_answer", "voicemail", "busy", "unknown"]))
    if event_type == "activity.logged":
        fields["kind"] = draw(st.sampled_from(["visit", "LinkedIn message", "sms", "follow-up"]))
    at = NOW - draw(st.integers(0, 6 * 24 * 60)) * 60.0
    return ev(f"e{index}", event_type, at=at, **fields)


def partition_of(item: dict[str, Any]) -> int:
    return int(item["lead_id"][1:]) % PARTITIONS


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Record]]:
    """Events in arrival order, with redeliveries of earlier ones, as records with per-partition offsets."""
    arrivals: list[dict[str, Any]] = []
    distinct: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 40))):
        if distinct and draw(st.integers(0, 3)) == 0:
            arrivals.append(draw(st.sampled_from(distinct)))  # a retried webhook: same event, same key
        else:
            item = draw(activity_event(index))
            distinct.append(item)
            arrivals.append(item)
    next_offset = {p: draw(st.integers(0, 1000)) for p in range(PARTITIONS)}
    stream = []
    for item in arrivals:
        p = partition_of(item)
        stream.append((p, next_offset[p], orjson.dumps(item)))
        next_offset[p] += 1
    return arrivals, stream


def expected_counter_totals(arrivals: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], int]:
    totals: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for a in distinct_activities(arrivals):
        totals[(a.rep, a.team, a.kind, a.outcome)] += 1
    return dict(totals)


def assert_streaming_equals_batch(w: Worker, arrivals: list[dict[str, Any]]) -> None:
    for p in range(PARTITIONS):
        w.processor.ensure_loaded(p)
    expected = expected_per_rep(arrivals)
    assert rep_counts(w.table) == expected
    assert rep_counts(w.table, "day") == expected  # every event is within retention
    assert rep_counts(w.table, "hour") == expected  # and within the 7 days of hour cells
    assert w.family.counter_totals(range(PARTITIONS)) == expected_counter_totals(arrivals)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(stream=streams(), cuts=st.lists(st.integers(1, 8), min_size=1, max_size=20))
def test_streaming_totals_equal_batch_recomputation_under_redelivery_and_any_batch_split(
    stream: tuple[list[dict[str, Any]], list[Record]], cuts: list[int]
) -> None:
    arrivals, recs = stream
    w = Worker()
    position, sizes = 0, itertools.cycle(cuts)
    while position < len(recs):
        size = next(sizes)
        w.process(recs[position : position + size])
        position += size
    assert_streaming_equals_batch(w, arrivals)


@settings(
    max_examples=300,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(stream=streams(), data=st.data())
def test_streaming_totals_equal_batch_recomputation_across_crashes_and_partial_writes(
    stream: tuple[list[dict[str, Any]], list[Record]], data: st.DataObject
) -> None:
    """Crash after any batch with any subset of its writes landed; replay from the last commit in new batches."""
    arrivals, recs = stream
    table: dict[str, bytes] = {}
    w = Worker(table)
    committed = 0
    while committed < len(recs):
        size = data.draw(st.integers(1, 8), label="batch size")
        batch = recs[committed : committed + size]
        before = dict(w.table)
        w.process(batch)
        if data.draw(st.integers(0, 2), label="crash?") == 0:
            writes = _writes_of(before, w.table)
            landed = [k for k in writes if data.draw(st.booleans(), label=f"landed {k}")]
            w = Worker(_landed(before, w.table, landed))  # restart: the batch is read again from `committed`
            continue
        committed += len(batch)
    assert_streaming_equals_batch(w, arrivals)


@settings(
    max_examples=200,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 150),  # minutes the clock advances before the batch
            st.lists(st.tuples(st.sampled_from(["anna", "ben"]), st.integers(-10, 30 * 60)), max_size=4),
            st.none() | st.integers(0, 90),  # render this many minutes after the batch, or not at all
        ),
        min_size=1,
        max_size=25,
    )
)
def test_rendered_rolling_windows_always_equal_the_events_of_their_hours(
    steps: list[tuple[int, list[tuple[str, int]], int | None]],
) -> None:
    """Late events into completed hours, renders within and across hours: the cached sums never go stale."""
    w = Worker()
    clock, offset = NOW, 0
    counted: list[tuple[str, float]] = []  # (rep, occurred_at) of every event so far
    for advance, batch, render_after in steps:
        clock += advance * 60
        recs = []
        for rep, age_minutes in batch:
            at = clock - age_minutes * 60
            recs.append((0, offset, orjson.dumps(ev(f"e{offset}", at=at, rep_id=rep))))
            counted.append((rep, at))
            offset += 1
        if recs:
            w.process(recs, now=clock)
        if render_after is None:
            continue
        clock += render_after * 60
        w.family.mark_rolling_dirty({0})
        for p in w.family.render({0}, clock):
            window = p.record["window"]
            if p.record["scope"] != "rep" or not window.startswith("rolling:"):
                continue
            hours = rolling_hour_range({"rolling:24h": 24, "rolling:7d": 168}[window], clock)
            expected = sum(1 for rep, at in counted if rep == p.record["id"] and hour_bucket(at) in hours)
            assert p.fields["total"] == expected, (window, p.record["id"])


class LinkingFamily(ActivityFamily):
    """An activity family that asks for one follow-up per call, as a linking family would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[Any] = []

    def apply(self, partition: int, offset: int, event: Any, now: float, arrived: float | None = None) -> bool:
        if event.type == "call.logged":
            self.pending.append(
                EventAdapter.validate_python(
                    {"event_id": f"link:{event.event_id}", "type": "deal.lead_linked",
                     "occurred_at": event.occurred_at, "deal_id": f"D-{event.lead_id}", "lead_id": event.lead_id}
                )
            )
        return super().apply(partition, offset, event, now, arrived)

    def take_follow_ups(self) -> list[Any]:
        taken, self.pending = self.pending, []
        return taken


def test_stage_applies_in_memory_and_collects_follow_ups_and_only_persist_writes_the_table() -> None:
    table: dict[str, bytes] = {}
    family = LinkingFamily(CellStore(table, "activity"), UTC, 35 * DAY, team_of_rep=TEAMS.get)
    processor = BatchProcessor(DedupIndex(table, 72 * HOUR), [family], lambda r, why: None)
    staged = processor.stage(records(0, [ev("e1"), ev("e2", "email.sent"), ev("e3", lead_id="L2")]), NOW)
    assert [(e.event_id, e.partition_key) for e in staged.stats.follow_ups] == [("link:e1", "D-L1"), ("link:e3", "D-L2")]
    assert table == {}, "nothing durable before the follow-ups are delivered"
    assert family.take_follow_ups() == [], "taken once"
    processor.persist(staged)
    assert table and staged.last_offsets == {0: 2}
    # a crash before persist replays the batch: the same follow-ups, under the same ids, come out again
    fresh = LinkingFamily(CellStore({}, "activity"), UTC, 35 * DAY, team_of_rep=TEAMS.get)
    again = BatchProcessor(DedupIndex({}, 72 * HOUR), [fresh], lambda r, why: None).process(
        records(0, [ev("e1"), ev("e2", "email.sent"), ev("e3", lead_id="L2")]), NOW
    )
    assert [e.event_id for e in again.follow_ups] == ["link:e1", "link:e3"]


def test_dedup_records_of_the_earlier_json_format_still_load_and_deduplicate() -> None:
    """A changelog written by a worker of the string-id version: its ids are digested on load."""
    table = {"0|dedup|4": orjson.dumps({"t": 1000.0, "ids": {"a": 4, "b": 5}})}
    dedup = DedupIndex(table, horizon_s=10**9)
    assert dedup.load_partition(0) == 5
    assert not dedup.admit(0, "a", 9), "a redelivery of an id the old record holds is a duplicate"
    assert dedup.admit(0, "b", 5), "the same message replayed at its own offset is processed again"
    assert dedup.admit(0, "c", 10)


def test_a_dedup_record_round_trips_its_digests_offsets_and_time() -> None:
    ids = {digest("x"): 0, digest("y"): 2**40, digest("ü-ünïcode"): 7}
    assert decode_record(encode_record(1234.5, ids)) == (1234.5, ids)


def test_compact_dedup_records_load_from_rows_decoded_ahead_of_the_loop() -> None:
    """``BatchProcessor`` decodes a partition's rows in a thread: the binary dedup records stay bytes and load."""
    table: dict[str, bytes] = {}
    first = DedupIndex(table, horizon_s=10**9)
    first.load_partition(0)
    assert first.admit(0, "a", 3)
    first.write_pending(0, now=1000.0)
    second = DedupIndex(table, horizon_s=10**9)
    assert second.load_partition(0, decode_rows(partition_rows(table, 0))) == 3
    assert not second.admit(0, "a", 7)
    assert second.admit(0, "a", 3)
