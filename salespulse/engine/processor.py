"""One batch of raw events from ``salespulse.events`` in, counted cells out: parse, deduplicate, apply, persist.

Works on plain ``(partition, offset, raw bytes)`` records, so it runs the same under Faust, in unit
tests and in the benchmark. Per partition, in offset order: a record that does not parse goes to the
dead-letter callback with the reason (its neighbours go on); a redelivered ``event_id`` is skipped;
every family applies the admitted events (one family after the other); then the new ids and the
touched cells are written, ids first.

Two phases, so that follow-up events (internal links from a deal's partition to its lead's and back)
are never lost: ``stage`` applies a batch in memory and collects the follow-ups, the caller delivers
them to ``salespulse.events``, then ``persist`` writes the state. A crash before ``persist`` replays the
batch and sends the same follow-ups again, under the same event ids, which their consumer deduplicates.
"""

from __future__ import annotations

from typing import Any

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from pydantic import ValidationError

from salespulse.models.errors import field_errors
from salespulse.models.events import Event, EventBase, event_from_json
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.memory import loading_state
from salespulse.engine.faust.tables import DecodedRows, decode_rows, partition_keys, read_rows
from salespulse.families.state import StateStore
from salespulse.topics import bounded_text, dead_letter_payload

log = logging.getLogger(__name__)

#: (partition, offset, raw value) or (partition, offset, raw value, Kafka timestamp in epoch seconds).
Record = tuple[int, int, bytes] | tuple[int, int, bytes, float]
DeadLetter = Callable[[Record, str], None]
_EXPIRE_EVERY_S = 60.0


class Family(Protocol):
    """A metric family as the processor sees it."""

    name: str
    partition_wm: dict[int, int]
    staged_wm: dict[int, int]

    @property
    def stores(self) -> Sequence[StateStore[Any]]:
        """Its cell stores, in the order a batch writes them (derived aggregates first)."""
        ...

    def on_loaded(self, partition: int) -> None: ...

    def take_follow_ups(self) -> list[Event]:
        """Events this family wants written to ``salespulse.events`` since the last call (then forgotten)."""
        ...

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool: ...
    def settle(self) -> None:
        """Bring what ``apply`` deferred (deltas summed over a batch) into the cells."""
        ...

    def expire(self, partition: int, now: float) -> int: ...
    def mark_partition_dirty(self, partition: int) -> None: ...
    def drop_partition(self, partition: int) -> None: ...


@dataclass
class BatchStats:
    """What happened to the records of one batch (and, summed, of a worker's life)."""

    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    cells_written: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    #: Events the families asked to write to ``salespulse.events`` (deterministic ids: resending is harmless).
    follow_ups: list[Event] = field(default_factory=list)

    def add(self, other: "BatchStats") -> None:
        self.processed += other.processed
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        self.cells_written += other.cells_written
        for name, n in other.by_type.items():
            self.by_type[name] = self.by_type.get(name, 0) + n


@dataclass
class StagedBatch:
    """A batch applied in memory, not yet written: its stats (with follow-ups) and last offset per partition."""

    stats: BatchStats
    last_offsets: dict[int, int]
    now: float

    def merge(self, later: "StagedBatch") -> "StagedBatch":
        """This batch and the one staged after it, to be persisted as one (each cell written once)."""
        stats = BatchStats()
        stats.add(self.stats)
        stats.add(later.stats)
        return StagedBatch(stats, {**self.last_offsets, **later.last_offsets}, max(self.now, later.now))


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line reason naming each bad field, for the dead-letter record."""
    return "; ".join(f"{e.field or '(event)'}: {e.message}" for e in field_errors(exc))


class BatchProcessor:
    """Applies batches of raw records to the families' cells, exactly once per event_id and offset."""

    def __init__(self, dedup: DedupIndex, families: Sequence[Family], dead_letter: DeadLetter) -> None:
        self.dedup = dedup
        self.families = list(families)
        self.dead_letter = dead_letter
        self.loaded: set[int] = set()
        self.totals = BatchStats()
        self._next_expiry: dict[int, float] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        #: Bumped when a partition is dropped: a load that began before is discarded.
        self._generation: dict[int, int] = {}

    def ensure_loaded(self, partition: int) -> bool:
        """Load a partition's durable state into memory if not done since it was assigned; True if loaded now.

        All at once, on the caller's thread: under a running worker use ``load``, which keeps the loop free."""
        if partition in self.loaded:
            return False
        table = self.dedup.table
        keys = partition_keys(table, partition)  # one scan for every store
        with loading_state():
            watermark = -1
            for store in self._stores():
                rows = decode_rows(read_rows(table, keys.pop(store.prefix, ())))
                watermark = max(watermark, store.load_partition(partition, rows))
            self._install(partition, watermark)
        return True

    def _stores(self) -> list[DedupIndex | StateStore[Any]]:
        """Every store of a partition's state, in load order: the dedup index, then each family's."""
        return [self.dedup, *(store for family in self.families for store in family.stores)]

    async def load(self, partitions: Iterable[int]) -> None:
        """``ensure_loaded`` for a running worker: the event loop keeps serving (scrapes, health checks, the
        flusher) while a large state loads. A partition is loaded store by store: the store's rows are read,
        decoded in a thread (most of the cost; the loop gets the GIL between rows) and installed, then freed
        before the next store's, so a restart holds one store's raw and decoded rows at a time beside the
        state (all of a partition's at once peaked at 1.5 times the state's memory). A partition dropped
        meanwhile (revoked) is not installed."""
        table = self.dedup.table
        for partition in sorted(set(partitions)):
            async with self._loading.setdefault(partition, asyncio.Lock()):
                if partition in self.loaded:
                    continue
                generation = self._generation.get(partition, 0)

                def overtaken() -> bool:  # dropped meanwhile, or loaded by ``ensure_loaded`` (which never yields)
                    return self._generation.get(partition, 0) != generation or partition in self.loaded

                with loading_state():  # no collection rescans the state while it is made (engine.memory)
                    keys = partition_keys(table, partition)
                    watermark = -1
                    for store in self._stores():
                        decoded: DecodedRows = await asyncio.to_thread(decode_rows, read_rows(table, keys.pop(store.prefix, ())))
                        if overtaken():
                            break
                        watermark = max(watermark, store.load_partition(partition, decoded))
                        del decoded
                    if overtaken():
                        if partition not in self.loaded:
                            self._forget(partition)
                        continue
                    self._install(partition, watermark)
                await asyncio.sleep(0)

    def _install(self, partition: int, watermark: int) -> None:
        """The last step of a load: the families index the loaded state and mark all of it for publication."""
        for family in self.families:
            family.partition_wm[partition] = watermark
            family.on_loaded(partition)
            family.mark_partition_dirty(partition)
        self.loaded.add(partition)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's in-memory state (it was revoked; the table keeps it for the next owner)."""
        self._generation[partition] = self._generation.get(partition, 0) + 1
        self._forget(partition)

    def _forget(self, partition: int) -> None:
        self.loaded.discard(partition)
        self.dedup.drop_partition(partition)
        self._next_expiry.pop(partition, None)
        for family in self.families:
            for store in family.stores:
                store.drop_partition(partition)
            family.drop_partition(partition)

    def process(self, records: Sequence[Record], now: float | None = None) -> BatchStats:
        """Apply and write one batch; records of each partition must come in offset order.

        The follow-ups in the returned stats are the caller's to deliver; under Faust use ``stage``,
        deliver, then ``persist``, so none is lost in a crash.
        """
        staged = self.stage(records, now)
        self.persist(staged)
        return staged.stats

    def stage(self, records: Sequence[Record], now: float | None = None) -> StagedBatch:
        """Apply one batch in memory and collect its follow-up events; nothing is written until ``persist``."""
        now = time.time() if now is None else now
        stats = BatchStats()
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record[0], []).append(record)
        for partition, group in by_partition.items():
            self._apply_partition(partition, group, now, stats)
            for family in self.families:  # what a render publishes from now on holds these offsets
                family.staged_wm[partition] = max(family.staged_wm.get(partition, -1), group[-1][1])
        for family in self.families:
            stats.follow_ups += family.take_follow_ups()
        return StagedBatch(stats, {partition: group[-1][1] for partition, group in by_partition.items()}, now)

    def persist(self, staged: StagedBatch) -> None:
        """Write what ``stage`` applied: per partition the new event ids first, then every family's cells."""
        now, stats, families = staged.now, staged.stats, self.families
        for partition, last_offset in staged.last_offsets.items():
            # Ids before cells: a crash between the two writes then replays, never double counts.
            self.dedup.write_pending(partition, now)
            for family in families:
                for store in family.stores:
                    stats.cells_written += store.write_touched(partition, last_offset)
                family.partition_wm[partition] = max(family.partition_wm.get(partition, -1), last_offset)
            if now >= self._next_expiry.get(partition, 0.0):
                self._next_expiry[partition] = now + _EXPIRE_EVERY_S
                self.dedup.expire(partition, now)
                for family in families:
                    family.expire(partition, now)
        self.totals.add(stats)

    def _apply_partition(self, partition: int, group: list[Record], now: float, stats: BatchStats) -> None:
        """Parse and admit a partition's records, then let each family apply all of them in offset order.

        Family by family rather than event by event: the families share nothing, so the cells reach the
        same values either way, and one family's working set stays in the CPU caches for the whole
        batch (interleaving four families per event made each of them about a third slower). An event
        that fails in a family is dead-lettered and skipped by the families after it, as when they were
        applied per event; dead letters go out in record order.
        """
        self.ensure_loaded(partition)
        admit = self.dedup.admit
        admitted: list[tuple[int, int, Event, float | None]] = []  # (index in group, offset, event, arrived)
        failed: dict[int, str] = {}  # index in group -> why it is dead-lettered
        for index, record in enumerate(group):
            offset, raw = record[1], record[2]
            # When the event was written to the log: the same on every replay, unlike ``now``.
            arrived = record[3] if len(record) > 3 else None
            try:
                event = event_from_json(raw)
            except ValidationError as exc:
                failed[index] = describe_validation_error(exc)
                continue
            if not admit(partition, event.event_id, offset):
                stats.duplicates += 1
                continue
            admitted.append((index, offset, event, arrived))
        for family in self.families:
            apply = family.apply
            for index, offset, event, arrived in admitted:
                if failed and index in failed:
                    continue
                try:
                    apply(partition, offset, event, now, arrived=arrived)
                except Exception as exc:  # a bug must cost one event, not the agent
                    log.exception("event at %s/%s failed in a metric family", partition, offset)
                    failed[index] = f"processing error: {type(exc).__name__}: {exc}"
            family.settle()
        by_type = stats.by_type
        for index, _offset, event, _arrived in admitted:
            if index not in failed:
                stats.processed += 1
                by_type[event.type] = by_type.get(event.type, 0) + 1
        for index in sorted(failed):
            self._dead_letter(group[index], failed[index], stats)

    def _dead_letter(self, record: Record, reason: str, stats: BatchStats) -> None:
        stats.dead_lettered += 1
        self.dead_letter(record, reason)


def dead_letter_value(record: Record, reason: str, now: float | None = None) -> bytes:
    """The ``salespulse.events.dlq`` message for a record that could not be processed (bounded in size)."""
    partition, offset, raw = record[0], record[1], record[2]
    return orjson.dumps(
        {
            "reason": bounded_text(reason),
            "partition": partition,
            "offset": offset,
            **dead_letter_payload(raw),
            "failed_at": time.time() if now is None else now,
        }
    )
