"""What a family asks of its state: the ``StateStore`` protocol (the engine's stores implement it).

A store keeps named cells per partition in memory, JSON objects with a ``wm`` (the highest source
offset they hold), and writes the touched ones durably when the engine persists a batch. Families
never see Faust, tables or changelogs: only this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

#: One cell: ``{"wm": offset, ...}`` (JSON-serialisable).
Cell = dict[str, Any]


class StateStore(Protocol):
    """Named cells per partition, loaded on assignment, written once per persisted batch."""

    @property
    def prefix(self) -> str:
        """What names this store's rows in the engine's table (the engine loads a partition store by store)."""
        ...

    def load_partition(self, partition: int, decoded: Mapping[str, Any] | None = None) -> int:
        """Load a partition's cells into memory (from ``decoded``, the partition's rows decoded ahead, when
        given); returns the highest watermark found (-1 if none)."""
        ...

    def drop_partition(self, partition: int) -> None: ...

    def cell(self, partition: int, name: str) -> Cell:
        """The cell, created empty (``wm`` -1) if absent."""
        ...

    def get(self, partition: int, name: str) -> Cell | None: ...

    def loaded(self, partition: int) -> dict[str, Cell]:
        """The partition's cells by name (the hot path reads this dict directly)."""
        ...

    def touch(self, partition: int, name: str) -> None:
        """Mark a cell changed: the next persist writes it under the batch's watermark."""
        ...

    def write_touched(self, partition: int, watermark: int) -> int: ...

    def write_many(self, partition: int, names: set[str]) -> None:
        """Write these cells now, keeping their watermarks (state changed outside a batch: the clock)."""
        ...

    def delete(self, partition: int, name: str) -> None: ...

    def delete_many(self, partition: int, names: Iterable[str]) -> int:
        """Forget several cells durably (expiry); returns how many were there."""
        ...

    def items(self, partition: int) -> Iterator[tuple[str, Cell]]: ...
