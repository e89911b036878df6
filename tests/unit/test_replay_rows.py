"""``salespulse replay`` input: rows become events or bad rows naming line and field; the position file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from salespulse.replay import BadRow, RateLimiter, ReplayError, load_position, read_csv, read_jsonl, save_position


def test_jsonl_rows_are_validated_and_bad_ones_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"event_id": "a", "type": "call.logged", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "l", '
        '"rep_id": "r", "outcome": "busy"}\n'
        "\n"
        '{"event_id": "b", "type": "call.logged", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "l"}\n'
        "not json\n"
        '{"event_id": "c", "type": "lead.deal_closed", "occurred_at": "2026-01-01T00:00:00Z", "lead_id": "l", '
        '"deal_id": "d", "pipeline": "p", "outcome": "won"}\n'
        '{"event_id": "d", "type": "lead.created", "occurred_at": "2099-01-01T00:00:00Z", "lead_id": "l"}\n'
    )
    rows = list(read_jsonl(path))
    assert rows[0][0] == 1 and rows[0][1].event_id == "a"  # type: ignore[union-attr]
    assert [(line, str(bad)) for line, bad in rows[1:]] == [
        (3, "line 3: field rep_id: Field required"),
        (4, str(BadRow(4, "", rows[2][1].message))),  # type: ignore[union-attr]
        (5, "line 5: field type: 'lead.deal_closed' is internal: only the worker writes it"),
        (6, "line 6: field occurred_at: in the future"),
    ]
    assert rows[2][1].message.startswith("not JSON")  # type: ignore[union-attr]


def test_csv_rows_map_columns_leave_empty_cells_out_and_a_missing_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("Id,When,Lead,Owner,Secs\nx1,2026-01-01T10:00:00Z,l1,r1,42\nx2,2026-01-01T10:00:00Z,l2,,\n")
    columns = {"event_id": "Id", "occurred_at": "When", "lead_id": "Lead", "rep_id": "Owner", "duration_s": "Secs"}
    rows = list(read_csv(path, columns, {"type": "call.logged", "outcome": "connected"}))
    assert rows[0][1].duration_s == 42.0  # type: ignore[union-attr]
    assert rows[1] == (3, BadRow(3, "rep_id", "Field required"))
    with pytest.raises(ReplayError, match="no column"):
        list(read_csv(path, {"event_id": "Missing"}, {}))


def test_position_file_round_trips_atomically_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    position = tmp_path / "h.jsonl.position"
    assert load_position(position) == 0
    save_position(position, 1234)
    assert load_position(position) == 1234 and not (tmp_path / "h.jsonl.position.tmp").exists()
    position.write_text("hello")
    with pytest.raises(ReplayError, match="not a position file"):
        load_position(position)


def test_rate_limiter_spaces_events_to_the_rate() -> None:
    async def send(n: int) -> float:
        limiter = RateLimiter(50)
        started = time.monotonic()
        for _ in range(n):
            await limiter.wait()
        return time.monotonic() - started

    assert asyncio.run(send(10)) >= 0.19  # the 10th event is due at 10/50 s
