"""Batch consumption below Faust's per-message stream, for the topics an app registers as batch agents.

Faust hands every fetched record to the conductor, a stream queue and a per-event ack, one at a time;
on a 2-core machine that path alone caps a worker near 9,000 events/s whatever the agent does. For a
topic registered with ``SalespulseApp.batch_agent``, this consumer instead passes all the records one
fetch returned for it (per partition in offset order) to the handler in one call, and acks them all
when the handler returns: the handler persists its state before returning, so Faust's commit loop,
which flushes the producer (the table changelogs) before committing, never commits an offset whose
effect was not written. Everything else stays Faust's: group membership and assignment, table recovery
and standby changelogs (still delivered message by message), commits, and rebalances, which wait for a
batch in flight (it counts as an unacked message) before tables and partitions are handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.futures import notify

#: A batch agent: awaited with the records of one fetch; when it returns their offsets may be committed.
BatchHandler = Callable[[Sequence[ConsumerRecord]], Awaitable[None]]


class BatchInFlight:
    """A batch being handled, standing in the consumer's unacked messages so that rebalances and stops wait for it."""

    __slots__ = ("acked", "refcount", "tps", "revoked", "__weakref__")

    def __init__(self, tps: set[TP]) -> None:
        self.acked = False
        self.refcount = 1  # read by Faust's wait_empty log line
        self.tps = tps
        self.revoked: set[TP] = set()

    def __repr__(self) -> str:
        return f"<batch of {sorted(str(tp) for tp in self.tps)}>"


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the records of batch-agent topics a fetch at a time."""

    _in_flight: BatchInFlight | None = None

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        batch = self._in_flight
        if batch is not None:
            batch.revoked |= revoked  # its offsets there are no longer ours to commit
        await super().on_partitions_revoked(revoked)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by the integration tests
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        if not handlers:
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(timeout=1.0)
                generation_id = self.app.consumer_generation_id
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_back()
                    continue
                batches: dict[str, list[tuple[TP, list[ConsumerRecord]]]] = {}
                for tp, tp_records in records.items():
                    if not self._still_current(generation_id):
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    if tp.topic in handlers:
                        fresh = await self._unread(tp, tp_records)
                        if fresh:
                            batches.setdefault(tp.topic, []).append((tp, fresh))
                    else:
                        await self._deliver_one_by_one(tp, tp_records, generation_id)
                for topic, parts in batches.items():
                    if not self._still_current(generation_id):
                        break
                    await self._handle(handlers[topic], parts)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def _still_current(self, generation_id: int) -> bool:
        """False once a rebalance began after the fetch: its records are re-read from the committed offsets."""
        return self.flow_active and self.app.consumer_generation_id == generation_id

    async def _seek_back(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning(f"exception performing seek when flow not active {exc}")

    async def _unread(self, tp: TP, tp_records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records at or past the read offset, noting a jump in offsets as a gap (as Faust's drain does)."""
        read = self._read_offset[tp]
        fresh = tp_records if read is None else [r for r in tp_records if r.offset >= read]
        if fresh and read and fresh[0].offset - read > 1 and self.app.topics.acks_enabled_for(tp.topic):
            await self._add_gap(tp, read + 1, fresh[0].offset)
        return fresh

    async def _deliver_one_by_one(self, tp: TP, tp_records: list[ConsumerRecord], generation_id: int) -> None:
        """Faust's own path, for every topic that is not a batch agent's (table changelogs, the leader topic)."""
        for record in tp_records:
            if not self._still_current(generation_id):
                return
            message = self._to_message(tp, record)
            read = self._read_offset[tp]
            if read is not None and message.offset < read:
                continue
            if read and message.offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, read + 1, message.offset)
            await self._maybe_commit_every()
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = message.offset

    async def _maybe_commit_every(self) -> None:
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()

    async def _handle(self, handler: BatchHandler, parts: list[tuple[TP, list[ConsumerRecord]]]) -> None:
        """Run the handler over one topic's records, to completion even if the drain is cancelled meanwhile."""
        await self.app.producer.buffer.wait_until_ebb()  # back-pressure from the changelog writes, as Faust's path has
        batch = BatchInFlight({tp for tp, _ in parts})
        self._unacked_messages.add(batch)  # type: ignore[arg-type]
        self._in_flight = batch
        records = [record for _, tp_records in parts for record in tp_records]
        # Shielded: a stop cancels the drain, not a batch half-way between its follow-ups and its writes.
        await asyncio.shield(asyncio.ensure_future(self._handle_and_ack(handler, records, parts, batch)))
        for tp, tp_records in parts:
            self._read_offset[tp] = tp_records[-1].offset
        await self._maybe_commit_every()

    async def _handle_and_ack(
        self,
        handler: BatchHandler,
        records: list[ConsumerRecord],
        parts: list[tuple[TP, list[ConsumerRecord]]],
        batch: BatchInFlight,
    ) -> None:
        try:
            await handler(records)
            self._ack(parts, batch.revoked)
        finally:
            batch.acked = True
            self._unacked_messages.discard(batch)  # type: ignore[arg-type]
            if self._in_flight is batch:
                self._in_flight = None
            notify(self._waiting_for_ack)

    def _ack(self, parts: list[tuple[TP, list[ConsumerRecord]]], revoked: set[TP]) -> None:
        """Mark the handled offsets acked as ``Consumer.ack`` does, holes between records included (none to wait for)."""
        inbound = getattr(self.app.monitor, "stream_inbound_time", None)
        now = monotonic()
        for tp, tp_records in parts:
            if tp in revoked or not self.app.topics.acks_enabled_for(tp.topic):
                continue
            committed = self._committed_offset[tp]
            first = tp_records[0].offset if committed is None else max(committed, tp_records[0].offset)
            acked_index = self._acked_index[tp]
            fresh = [offset for offset in range(first, tp_records[-1].offset + 1) if offset not in acked_index]
            acked_index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
            if inbound is not None:
                inbound[tp] = now  # Faust's livelock check reads when a partition's stream last took records
