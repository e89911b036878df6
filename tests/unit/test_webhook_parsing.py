"""The generic endpoint's request parsing: all-or-nothing validation with each bad field named."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from salespulse.handlers.webhooks import RejectedRequest, parse_events


def call(event_id: str, at: datetime) -> dict:
    return {
        "event_id": event_id,
        "type": "call.logged",
        "occurred_at": at.isoformat(),
        "lead_id": "L1",
        "rep_id": "R1",
        "outcome": "connected",
    }


def test_an_event_more_than_a_day_ahead_of_the_clock_is_rejected_naming_occurred_at() -> None:
    now = datetime.now(timezone.utc)
    body = orjson.dumps([call("ok", now + timedelta(hours=23)), call("ahead", now + timedelta(hours=25))])
    with pytest.raises(RejectedRequest) as caught:
        parse_events(body)
    assert caught.value.status == 400
    assert [(e["index"], e["field"], e["type"]) for e in caught.value.body["errors"]] == [(1, "occurred_at", "future")]


def test_more_than_500_events_are_rejected_as_a_whole() -> None:
    now = datetime.now(timezone.utc)
    with pytest.raises(RejectedRequest) as caught:
        parse_events(orjson.dumps([call(f"e{i}", now) for i in range(501)]))
    assert (caught.value.status, caught.value.reason) == (400, "too_many_events")
    assert len(parse_events(orjson.dumps([call(f"e{i}", now) for i in range(500)]))) == 500


@pytest.mark.parametrize(("body", "reason"), [(b"{not json", "invalid_json"), (b"[]", "empty"), (b"[1]", "invalid_event")])
def test_bodies_that_hold_no_events_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedRequest) as caught:
        parse_events(body)
    assert (caught.value.status, caught.value.reason) == (400, reason)
