"""Consumer lag per owned partition: the worker's arithmetic and its exposition."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from salespulse.outputs.prometheus import ConsumerLagCollector
from salespulse.topics import EVENTS_TOPIC
from salespulse.engine.worker import WorkerRuntime


class FakeConsumer:
    """Faust's consumer as the lag needs it: high watermarks and the read offsets set at seek."""

    def __init__(self, highwaters: dict[int, int | None], read: dict[int, int]) -> None:
        self.highwaters = highwaters
        self._read_offset = {(EVENTS_TOPIC, p): o for p, o in read.items()}

    def highwater(self, tp: tuple[str, int]) -> int | None:
        value = self.highwaters[tp[1]]
        if value == -1:
            raise AssertionError("partition not assigned")  # aiokafka asserts on unknown partitions
        return value


def lag_of(owned: set[int], positions: dict[int, int], highwaters: dict[int, int | None], read: dict[int, int]):
    runtime = SimpleNamespace(
        owned_partitions=lambda: owned,
        positions=positions,
        app=SimpleNamespace(consumer=FakeConsumer(highwaters, read)),
    )
    return WorkerRuntime.consumer_lag(runtime)  # type: ignore[arg-type]


def test_lag_is_highwater_minus_the_next_offset_processed() -> None:
    assert lag_of({0, 1}, {0: 100, 1: 7}, {0: 130, 1: 7}, {}) == {0: 30, 1: 0}


def test_before_its_first_record_a_partition_counts_from_where_faust_started_reading() -> None:
    assert lag_of({2}, {}, {2: 500}, {2: 450}) == {2: 50}


def test_unknown_highwater_or_position_is_none_never_a_made_up_number() -> None:
    assert lag_of({0, 1, 2}, {0: 10}, {0: None, 1: -1, 2: 40}, {}) == {0: None, 1: None, 2: None}


def test_lag_never_goes_negative_and_nothing_is_reported_while_rebalancing() -> None:
    assert lag_of({0}, {0: 12}, {0: 10}, {}) == {0: 0}
    assert lag_of(set(), {0: 12}, {0: 10}, {}) == {}


def test_collector_exports_known_lags_and_counts_every_owned_partition() -> None:
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(EVENTS_TOPIC, lambda: {0: 5, 3: None}))
    text = generate_latest(registry).decode()
    assert 'salespulse_consumer_lag_records{partition="0",topic="salespulse.events"} 5.0' in text
    assert 'partition="3"' not in text
    assert "salespulse_worker_partitions_owned 2.0" in text
