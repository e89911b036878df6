"""A record's arrival time decides whether a new lead can alert: replayed records never can."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from salespulse.streams.topics import REPLAY_HEADER
from salespulse.streams.worker import arrival_time


@pytest.mark.parametrize("headers", [None, [], [("other", b"1")], {"other": b"1"}])
def test_a_live_record_arrives_at_its_kafka_timestamp(headers: object) -> None:
    assert arrival_time(SimpleNamespace(headers=headers, timestamp=1_700_000_000.5)) == 1_700_000_000.5


@pytest.mark.parametrize("headers", [[(REPLAY_HEADER, b"1")], {REPLAY_HEADER: b"1"}, [("x", b""), (REPLAY_HEADER, b"")]])
def test_a_replayed_record_arrives_infinitely_late(headers: object) -> None:
    assert arrival_time(SimpleNamespace(headers=headers, timestamp=1_700_000_000.5)) == float("inf")
