"""Batch consumption below Faust's per-message stream, for the topics an app registers as batch agents.

Faust hands every fetched record to the conductor, a stream queue and a per-event ack, one at a time;
on a 2-core machine that path alone caps a worker near 9,000 events/s whatever the agent does. For a
topic registered with ``SalespulseApp.batch_agent``, this consumer instead passes all the records one
fetch returned for it (per partition in offset order) to the agent's ``handle`` in one call.

Offsets are acked only by ``persist``, which the consumer runs right before every offset commit
(Faust's periodic commit, ``broker_commit_every`` records, a rebalance, a stop) and before giving up
partitions: the agent writes everything it handled since the last ``persist``, then those offsets are
acked, then Faust flushes the producer (the table changelogs) and commits them. So no offset is
committed before its effect was written, and state is written once per commit, not once per fetch.

Everything else stays Faust's: group membership and assignment, table recovery and standby changelogs
(still delivered message by message), commits, and rebalances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any, NamedTuple

from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.futures import notify


class BatchAgent(NamedTuple):
    """A topic's consumer: ``handle`` applies one fetch's records; ``persist`` writes all handled so far."""

    #: Awaited with the records of one fetch; may keep their effect in memory until ``persist``.
    handle: Callable[[Sequence[ConsumerRecord]], Awaitable[None]]
    #: Writes (to tables, whose changelogs the commit flushes) everything handled since the last call.
    persist: Callable[[], Awaitable[None]]
    #: Awaited with a fetch's records before ``handle``, outside the batch lock, and may take its time (load
    #: the state of partitions just assigned): a rebalance that begins meanwhile drops the fetch, as always.
    prepare: Callable[[Sequence[ConsumerRecord]], Awaitable[None]] | None = None


class UnpersistedState:
    """Stands in the consumer's unacked messages while handled records await ``persist``, so a stop waits."""

    __slots__ = ("acked", "refcount", "__weakref__")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1  # read by Faust's wait_empty log line

    def __repr__(self) -> str:
        return "<batch-agent state not yet persisted>"


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the records of batch-agent topics a fetch at a time."""

    _lock: asyncio.Lock | None = None
    _marker: UnpersistedState | None = None
    _revoking: bool = False

    def _batch_state(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
            #: per partition, (first, last) offsets handled since the last persist
            self._unpersisted: dict[TP, tuple[int, int]] = {}
            self._unpersisted_count = 0
        return self._lock

    @property
    def _agents(self) -> dict[str, BatchAgent]:
        return getattr(self.app, "batch_agents", {})

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        await self.persist_batches()  # what is about to be committed must be written first
        return bool(await super().force_commit(topics, start_new_transaction=start_new_transaction))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Write all handled state while the partitions are still ours, and take no new fetch until
        # Faust has stopped the flow: the next owner recovers the tables from this point.
        self._revoking = True
        try:
            await self.persist_batches()
            await super().on_partitions_revoked(revoked)
        finally:
            self._revoking = False

    async def persist_batches(self) -> None:
        """Have every batch agent write what it handled, then ack those offsets (for the next commit)."""
        if not self._agents:
            return
        async with self._batch_state():
            if not self._unpersisted:
                return
            for agent in set(self._agents.values()):
                await agent.persist()
            self._ack(self._unpersisted)
            self._unpersisted = {}
            self._unpersisted_count = 0
            marker, self._marker = self._marker, None
            if marker is not None:
                marker.acked = True
                self._unacked_messages.discard(marker)  # type: ignore[arg-type]
            notify(self._waiting_for_ack)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by the integration tests
        agents = self._agents
        if not agents:
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
                    if tp.topic in agents:
                        fresh = await self._unread(tp, tp_records)
                        if fresh:
                            batches.setdefault(tp.topic, []).append((tp, fresh))
                    else:
                        await self._deliver_one_by_one(tp, tp_records, generation_id)
                for topic, parts in batches.items():
                    await self._handle(agents[topic], parts, generation_id)
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
        return self.flow_active and not self._revoking and self.app.consumer_generation_id == generation_id

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
            commit_every = self._commit_every
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = message.offset

    async def _handle(self, agent: BatchAgent, parts: list[tuple[TP, list[ConsumerRecord]]], generation_id: int) -> None:
        """Hand one topic's records to its agent, to completion even if the drain is cancelled meanwhile."""
        await self.app.producer.buffer.wait_until_ebb()  # back-pressure from the changelog writes, as Faust's path has
        if agent.prepare is not None:
            await agent.prepare([record for _, tp_records in parts for record in tp_records])
        # Shielded: a stop cancels the drain, not a batch half-way through (its follow-ups sent, say).
        await asyncio.shield(asyncio.ensure_future(self._handle_locked(agent, parts, generation_id)))
        commit_every = self._commit_every
        if commit_every is not None and self._unpersisted_count >= commit_every:
            await self.commit()

    async def _handle_locked(
        self, agent: BatchAgent, parts: list[tuple[TP, list[ConsumerRecord]]], generation_id: int
    ) -> None:
        async with self._batch_state():
            if not self._still_current(generation_id):
                return  # a rebalance began: these records are read again from the committed offsets
            await agent.handle([record for _, tp_records in parts for record in tp_records])
            unpersisted = self._unpersisted
            for tp, tp_records in parts:
                last = tp_records[-1].offset
                first = unpersisted[tp][0] if tp in unpersisted else tp_records[0].offset
                unpersisted[tp] = (first, last)
                self._read_offset[tp] = last
                self._unpersisted_count += len(tp_records)
            if self._marker is None:
                self._marker = UnpersistedState()
                self._unacked_messages.add(self._marker)  # type: ignore[arg-type]

    def _ack(self, ranges: dict[TP, tuple[int, int]]) -> None:
        """Mark the persisted offsets acked as ``Consumer.ack`` does, holes between records included."""
        inbound = getattr(self.app.monitor, "stream_inbound_time", None)
        now = monotonic()
        for tp, (first, last) in ranges.items():
            if not self.app.topics.acks_enabled_for(tp.topic):
                continue
            committed = self._committed_offset[tp]
            if committed is not None:
                first = max(first, committed)
            acked_index = self._acked_index[tp]
            fresh = [offset for offset in range(first, last + 1) if offset not in acked_index]
            acked_index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
            if inbound is not None:
                inbound[tp] = now  # Faust's livelock check reads when a partition's stream last took records
