"""What the engine's two state stores share: a table, the prefix of their rows, the codec of their states, and
the working copy of the owned partitions' states (``CellStore`` and ``RecordLog`` differ in how they write)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Generic, TypeVar, overload

from salespulse.families.state import JSON_CELLS, Cell, IndexedCodec, StateCodec

S = TypeVar("S")


class TableStore(Generic[S]):
    """Named states per owned partition over a durable table; subclasses load and write them."""

    @overload
    def __init__(self: TableStore[Cell], table: MutableMapping[str, bytes], prefix: str) -> None: ...

    @overload
    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: StateCodec[S]) -> None: ...

    def __init__(self, table: MutableMapping[str, bytes], prefix: str, codec: Any = JSON_CELLS) -> None:
        self._table = table
        self._prefix = prefix
        self._codec: StateCodec[S] = codec
        self._states: dict[int, dict[str, S]] = {}
        self._touched: dict[int, set[str]] = {}

    @property
    def prefix(self) -> str:
        """The prefix of this store's table rows (``"<partition>|<prefix>|<name>"``)."""
        return self._prefix

    @property
    def partitions(self) -> set[int]:
        """Partitions whose states are loaded."""
        return set(self._states)

    def cell(self, partition: int, name: str) -> S:
        """The state ``name`` of a loaded partition, created empty (watermark -1) if new."""
        states = self._states[partition]
        found = states.get(name)
        if found is None:
            found = states[name] = self._codec.new(name)
        return found

    def loaded(self, partition: int) -> dict[str, S]:
        """The states of a loaded partition by name, to read in hot loops (create with ``cell``, mark with ``touch``)."""
        return self._states[partition]

    def get(self, partition: int, name: str) -> S | None:
        """The state if it exists, without creating it."""
        states = self._states.get(partition)
        return None if states is None else states.get(name)

    def touch(self, partition: int, name: str) -> None:
        """Mark a state changed in the current batch, so ``write_touched`` persists it."""
        self._touched[partition].add(name)

    def items(self, partition: int) -> Iterator[tuple[str, S]]:
        """The states of a loaded partition (a snapshot: the caller may delete while iterating)."""
        return iter(list(self._states.get(partition, {}).items()))

    def indexed(self, partition: int) -> Iterator[tuple[str, float, float | None]]:
        """``(name, newest, watch)`` of every state, from the codec's ``index`` (an ``IndexedCodec`` only)."""
        codec = self._codec
        if not isinstance(codec, IndexedCodec):
            raise TypeError(f"the states of {self._prefix!r} have no index: their codec is not an IndexedCodec")
        index = codec.index
        return iter([(name, *index(name, state)) for name, state in self._states.get(partition, {}).items()])
