"""Durable alert clocks, one per entity, for rules whose condition a family's state decides (a deal stalled).

A family *arms* an entity's clock with an episode (what the alert is about: the deal's stage entry),
its start, its deadline and the alert's fields; it *ends* the episode when the condition goes away
(the deal moved or closed). The engine's alert clock fires what is due, publishes each status once
and records it here, so a worker that crashes or loses the partition hands the next owner the same
clocks: the cells live in a changelogged store like every other state.

One cell per entity: ``{"wm", "ep", "start", "deadline", "fields", "fired", "resolved", "published",
"prev"}``; ``prev`` keeps a resolved episode until both of its statuses went out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TypedDict, cast

from salespulse.families.state import Cell, StateStore

#: (partition, clock id, the contract's alert JSON)
Alert = tuple[int, str, dict[str, Any]]


class Episode(TypedDict):
    """One armed episode of an entity's clock: what it is about, when it started, fires and fired."""

    ep: str  # what the alert is about (the deal's stage entry, the lead's first touch, the rep's day)
    start: float
    deadline: float
    fields: dict[str, str]  # the alert's labels (rep_id, team, source ...)
    fired: float | None
    resolved: float | None
    published: list[str]  # statuses already published (``<rule>:firing`` ...)


class ClockCell(TypedDict, total=False):
    """One entity's clock as its store keeps it (a JSON object): the current episode's keys while one is
    armed, the previous episode until both its statuses went out, and what a rule adds of its own."""

    wm: int
    ep: str
    start: float
    deadline: float
    fields: dict[str, str]
    fired: float | None
    resolved: float | None
    published: list[str]
    prev: Episode
    day: str  # rep_no_activity: the rep's local day the clock was armed for
    days: dict[str, float]  # rep_no_activity's ``active|<rep>`` records: local day -> the earliest activity


class ClockCells:
    """``StateStore`` codec of ``ClockCell``: the cell is its JSON object."""

    def new(self, name: str) -> ClockCell:
        return {"wm": -1}

    def watermark(self, state: ClockCell) -> int:
        return state.get("wm", -1)

    def set_watermark(self, state: ClockCell, watermark: int) -> None:
        state["wm"] = watermark

    def decode(self, name: str, raw: Cell) -> ClockCell:
        return cast(ClockCell, raw)

    def encode(self, state: ClockCell) -> Cell:
        return cast(Cell, state)


CLOCK_CELLS = ClockCells()


_EPISODE_KEYS = ("ep", "start", "deadline", "fields", "fired", "resolved", "published")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


class EntityClocks:
    """The clocks of one rule (``rule``), keyed by entity id, with the entity field ``entity_field``."""

    def __init__(self, store: StateStore[ClockCell], rule: str, entity_field: str) -> None:
        self.store = store
        self.rule = rule
        self.entity_field = entity_field
        #: Per partition: heap of (deadline, entity, episode) of armed, unfired clocks.
        self.due: dict[int, list[tuple[float, str, str]]] = {}
        #: (partition, entity) with a status not yet published.
        self.unpublished: set[tuple[int, str]] = set()
        #: Per partition: entities with a firing or recently resolved alert (re-sent to Alertmanager).
        self.alerting: dict[int, set[str]] = {}
        #: Partitions loaded with unpublished alerts: a previous owner may have sent them unrecorded.
        self.inherited_unpublished: set[int] = set()
        #: Called per owned partition before firing (a rule whose clocks are armed by time, not by events).
        self.before_due: Callable[[int, float], None] | None = None

    # -- the family's side ---------------------------------------------------------------------------

    def arm(self, partition: int, entity: str, episode: str, start: float, deadline: float,
            fields: Mapping[str, str], at: float, in_batch: bool = True) -> None:
        """The entity is in ``episode`` since ``start``: fire at ``deadline`` unless it ends first.

        ``in_batch``: an event armed it (the batch's persist writes the cell); else the caller writes it
        (``write_many``: a clock armed by time, between batches).
        """
        cell = self.store.get(partition, entity)
        if cell is not None and cell.get("ep") == episode:
            if cell.get("fired") is None and (cell["deadline"] != deadline or cell["fields"] != dict(fields)):
                cell["deadline"], cell["fields"] = deadline, dict(fields)
                heapq.heappush(self.due.setdefault(partition, []), (deadline, entity, episode))
                if in_batch:
                    self.store.touch(partition, entity)
            return
        if cell is None:
            cell = self.store.cell(partition, entity)
        else:
            self._close(partition, entity, cell, at)
        cell.update({"ep": episode, "start": start, "deadline": deadline, "fields": dict(fields), "fired": None,
                     "resolved": None, "published": []})
        heapq.heappush(self.due.setdefault(partition, []), (deadline, entity, episode))
        if in_batch:
            self.store.touch(partition, entity)

    def end(self, partition: int, entity: str, at: float) -> None:
        """The entity's episode is over at ``at``: a firing alert resolves, an unfired clock is disarmed."""
        cell = self.store.get(partition, entity)
        if cell is None or cell.get("ep") is None:
            return
        self._close(partition, entity, cell, at)
        raw = cast(Cell, cell)  # the episode's keys, named in a loop
        for key in _EPISODE_KEYS:
            raw.pop(key, None)
        self.store.touch(partition, entity)

    def _close(self, partition: int, entity: str, cell: ClockCell, at: float) -> None:
        """Keep a fired episode (resolved now if it was firing) in ``prev`` until its statuses went out."""
        fired = cell.get("fired")
        if fired is None:
            return
        if cell.get("resolved") is None:
            cell["resolved"] = max(at, fired)
            self.unpublished.add((partition, entity))
            self.alerting.setdefault(partition, set()).add(entity)
        episode = Episode(ep=cell["ep"], start=cell["start"], deadline=cell["deadline"], fields=cell["fields"],
                          fired=cell["fired"], resolved=cell["resolved"], published=cell["published"])
        if not self._all_published(episode):
            cell["prev"] = episode

    def forget(self, partition: int, entities: Iterable[str]) -> None:
        """Drop the clocks of expired entities (their alerts resolved and published long ago)."""
        gone = [entity for entity in entities if self.store.get(partition, entity) is not None]
        if gone:
            self.store.delete_many(partition, gone)

    # -- loading -------------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        heap: list[tuple[float, str, str]] = []
        for entity, cell in self.store.items(partition):
            if cell.get("ep") is not None and cell.get("fired") is None:
                heap.append((cell["deadline"], entity, cell["ep"]))
            if any(self._unpublished_statuses(entity, cell)):
                self.unpublished.add((partition, entity))
                self.inherited_unpublished.add(partition)
            if cell.get("fired") is not None or cell.get("prev") is not None:
                self.alerting.setdefault(partition, set()).add(entity)
        heapq.heapify(heap)
        self.due[partition] = heap

    def drop_partition(self, partition: int) -> None:
        self.due.pop(partition, None)
        self.alerting.pop(partition, None)
        self.unpublished = {entry for entry in self.unpublished if entry[0] != partition}
        self.inherited_unpublished.discard(partition)

    # -- the engine's alert clock (``engine.alert_clock.AlertSource``) --------------------------------

    def due_alerts(self, partitions: Iterable[int], now: float) -> int:
        fired = 0
        for partition in partitions:
            heap = self.due.get(partition)
            if heap is None:
                continue  # not loaded (yet)
            if self.before_due is not None:
                self.before_due(partition, now)
            changed: set[str] = set()
            while heap and heap[0][0] <= now:
                deadline, entity, episode = heapq.heappop(heap)
                cell = self.store.get(partition, entity)
                if cell is None or cell.get("ep") != episode or cell.get("fired") is not None or cell["deadline"] != deadline:
                    continue  # ended, fired already, or re-armed with another deadline
                cell["fired"] = now
                changed.add(entity)
                self.unpublished.add((partition, entity))
                self.alerting.setdefault(partition, set()).add(entity)
                fired += 1
            if changed:
                self.store.write_many(partition, changed)
        return fired

    def pending_alerts(self, owned: set[int]) -> list[Alert]:
        out: list[Alert] = []
        for partition, entity in sorted(self.unpublished):
            cell = self.store.get(partition, entity) if partition in owned else None
            if cell is not None:
                out.extend((partition, clock_id, alert) for clock_id, alert, _ in self._unpublished_statuses(entity, cell))
        return out

    def mark_published(self, published: Iterable[tuple[int, str, str]]) -> None:
        changed: dict[int, set[str]] = {}
        for partition, clock_id, key in published:
            entity, _, episode = clock_id.rpartition("@")
            cell = self.store.get(partition, entity)
            if cell is None:
                continue
            for holder in (cell, cell.get("prev")):
                if holder is not None and holder.get("ep") == episode and key not in holder["published"]:
                    holder["published"].append(key)
                    changed.setdefault(partition, set()).add(entity)
            prev = cell.get("prev")
            if prev is not None and self._all_published(prev):
                del cell["prev"]
            if not any(self._unpublished_statuses(entity, cell)):
                self.unpublished.discard((partition, entity))
        for partition, names in changed.items():
            self.store.write_many(partition, names)

    def active_alerts(self, owned: Iterable[int], now: float, resolved_within_s: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for partition in owned:
            entities = self.alerting.get(partition, set())
            for entity in list(entities):
                cell = self.store.get(partition, entity)
                current = [] if cell is None else [
                    alert for alert, at in self._latest(entity, cell, now)
                    if alert["status"] == "firing" or at >= now - resolved_within_s
                ]
                if not current:
                    entities.discard(entity)
                out.extend(current)
        return out

    # -- alert JSON ----------------------------------------------------------------------------------

    def clock_id(self, entity: str, episode: str) -> str:
        """What names one episode's alert in the guard hash and the topic's key: ``<entity>@<episode>``."""
        return f"{entity}@{episode}"

    def alert_json(self, entity: str, episode: Episode | ClockCell, status: str, emitted: float) -> dict[str, Any]:
        return {
            "alert": self.rule,
            "status": status,
            self.entity_field: entity,
            **episode["fields"],
            "started_at": iso(episode["start"]),
            "deadline": iso(episode["deadline"]),
            "emitted_at": iso(emitted),
            "age_seconds": round(emitted - episode["start"], 3),
        }

    def _episodes(self, cell: ClockCell) -> Iterator[Episode | ClockCell]:
        prev = cell.get("prev")
        if prev is not None:
            yield prev
        if cell.get("ep") is not None and cell.get("fired") is not None:
            yield cell

    def _statuses(self, entity: str, episode: Episode | ClockCell) -> Iterator[tuple[str, dict[str, Any], float]]:
        fired = cast(float, episode["fired"])  # only fired episodes have statuses (``_episodes``)
        yield f"{self.rule}:firing", self.alert_json(entity, episode, "firing", fired), fired
        resolved = episode.get("resolved")
        if resolved is not None:
            yield f"{self.rule}:resolved", self.alert_json(entity, episode, "resolved", resolved), resolved

    def _unpublished_statuses(self, entity: str, cell: ClockCell) -> Iterator[tuple[str, dict[str, Any], str]]:
        for episode in self._episodes(cell):
            for key, alert, _ in self._statuses(entity, episode):
                if key not in episode["published"]:
                    yield self.clock_id(entity, episode["ep"]), alert, key

    def _all_published(self, episode: Episode | ClockCell) -> bool:
        return all(key in episode["published"] for key, _, _ in self._statuses("", episode))

    def _latest(self, entity: str, cell: ClockCell, now: float) -> Iterator[tuple[dict[str, Any], float]]:
        for episode in self._episodes(cell):
            resolved = episode.get("resolved")
            if resolved is None:
                yield self.alert_json(entity, episode, "firing", now), now
            else:
                yield self.alert_json(entity, episode, "resolved", resolved), resolved
