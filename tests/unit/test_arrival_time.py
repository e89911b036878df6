"""A record's arrival time decides whether a new lead can alert: replayed records never can."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from salespulse.topics import REPLAY_HEADER
from salespulse.engine.worker import arrival_time, to_record


@pytest.mark.parametrize("headers", [None, [], [("other", b"1")], {"other": b"1"}])
def test_a_live_record_arrives_at_its_kafka_timestamp(headers: object) -> None:
    assert arrival_time(SimpleNamespace(headers=headers, timestamp=1_700_000_000.5)) == 1_700_000_000.5


@pytest.mark.parametrize("headers", [[(REPLAY_HEADER, b"1")], {REPLAY_HEADER: b"1"}, [("x", b""), (REPLAY_HEADER, b"")]])
def test_a_replayed_record_arrives_infinitely_late(headers: object) -> None:
    assert arrival_time(SimpleNamespace(headers=headers, timestamp=1_700_000_000.5)) == float("inf")


def test_a_consumed_record_becomes_a_processor_record_arriving_at_its_timestamp_in_seconds() -> None:
    record = SimpleNamespace(partition=2, offset=41, value=b"{}", timestamp=1_700_000_000_500, headers=[])
    assert to_record(record) == (2, 41, b"{}", 1_700_000_000.5)  # type: ignore[arg-type]


def test_a_consumed_replayed_record_arrives_infinitely_late() -> None:
    record = SimpleNamespace(partition=0, offset=7, value=b"{}", timestamp=1_700_000_000_500, headers=[(REPLAY_HEADER, b"1")])
    assert to_record(record)[3] == float("inf")  # type: ignore[arg-type]


def test_a_consumed_record_without_value_or_timestamp_is_still_a_record() -> None:
    record = SimpleNamespace(partition=1, offset=3, value=None, timestamp=None, headers=[])
    assert to_record(record) == (1, 3, b"")  # type: ignore[arg-type]  # dead-lettered; "now" as arrival
