"""Pins what ``salespulse.engine.faust`` relies on inside faust-streaming and aiokafka (private names).

These are not public APIs: an upgrade that renames or reshapes one must fail here, by name, before
the batch consumer misbehaves at run time. ``pyproject.toml`` pins the versions checked here.
"""

from __future__ import annotations

import inspect
from collections import defaultdict

import aiokafka
import faust
import pytest
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from salespulse.engine.faust.internals import read_offsets


def test_the_pinned_versions_are_the_ones_installed() -> None:
    assert (faust.__version__, aiokafka.__version__) == ("0.15.3", "0.14.0")


@pytest.mark.parametrize(
    "method, parameters",
    [
        ("_drain_messages", ["self", "fetcher"]),
        ("_wait_next_records", ["self", "timeout"]),
        ("_to_message", ["self", "tp", "record"]),
        ("_add_gap", ["self", "tp", "offset_from", "offset_to"]),
        ("perform_seek", ["self"]),
        ("force_commit", ["self", "topics", "start_new_transaction"]),
        ("on_partitions_revoked", ["self", "revoked"]),
        ("_new_consumer_thread", ["self"]),
    ],
)
def test_the_consumer_methods_the_batch_consumer_overrides_or_calls_keep_their_signature(
    method: str, parameters: list[str]
) -> None:
    assert list(inspect.signature(getattr(faust_aiokafka.Consumer, method)).parameters) == parameters


@pytest.mark.parametrize(
    "attribute",
    ["_read_offset", "_committed_offset", "_acked_index", "_acked", "_unacked_messages", "_waiting_for_ack",
     "_commit_every", "_buffered_partitions"],
)
def test_the_consumer_state_the_batch_consumer_reads_is_set_up_by_faust(attribute: str) -> None:
    assert f"self.{attribute}" in inspect.getsource(faust_consumer.Consumer.__init__)


def test_read_offset_is_a_per_partition_mapping_that_read_offsets_returns() -> None:
    consumer = object.__new__(faust_aiokafka.Consumer)
    consumer._read_offset = defaultdict(lambda: None)  # as Consumer.__init__ sets it
    consumer._read_offset[TP("t", 0)] = 41
    assert read_offsets(consumer) == {TP("t", 0): 41}
    assert read_offsets(object()) == {}


def test_aiokafka_reads_the_fetch_wait_from_the_attribute_the_app_sets() -> None:
    # SalespulseApp's consumer thread sets ``_fetch_max_wait_ms`` after construction; aiokafka builds its
    # fetcher from that attribute at start().
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    thread = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    assert list(inspect.signature(thread).parameters) == ["self", "transport"]


def test_tables_route_changelog_writes_through_partition_for_key() -> None:
    assert list(inspect.signature(faust.Table.partition_for_key).parameters) == ["self", "key"]
    for hook in (faust.Table.on_key_set, faust.Table.on_key_del):  # every table write and delete
        assert "self.partition_for_key(key)" in inspect.getsource(hook)
