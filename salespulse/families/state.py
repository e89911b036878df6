"""What a family asks of its state: the ``StateStore`` protocol (the engine's stores implement it).

A store keeps named states per partition in memory, each with a watermark (the highest source offset it
holds), and writes the touched ones durably when the engine persists a batch. A state is a JSON object
(``Cell``, ``JSON_CELLS``) unless its family gives the store a ``StateCodec`` for a typed state (the
engagement family's ``Lead``). Families never see Faust, tables or changelogs: only this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from sys import intern
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

#: One cell: ``{"wm": offset, ...}`` (JSON-serialisable).
Cell = dict[str, Any]
S = TypeVar("S")


class StateCodec(Protocol[S]):
    """A typed state as a store keeps it: created empty, its watermark, and its JSON form both ways (a
    store may hold several kinds of state, told apart by name)."""

    def new(self, name: str) -> S: ...

    def watermark(self, state: S) -> int: ...

    def set_watermark(self, state: S, watermark: int) -> None: ...

    def decode(self, name: str, raw: Cell) -> S:
        """The state from its JSON object (as written by ``encode``, or by any earlier version)."""
        ...

    def encode(self, state: S) -> Cell: ...


#: What a store keeps beside a typed state, so that it need not decode the state to answer for it:
#: ``(newest, watch)``. ``newest`` is the instant of the state's newest fact (expiry compares it with the
#: retention cutoff); ``watch`` is an instant the family needs of the state without an event (a deadline
#: counts from it) or ``0.0``, and ``None`` if the family need not look at the state when its partition loads.
StateIndex = tuple[float, float | None]


@runtime_checkable
class IndexedCodec(StateCodec[S], Protocol):
    """A codec whose states the store may keep encoded until they are read (``RecordLog``): ``index`` says what
    the family needs of a state without reading it."""

    def index(self, name: str, state: S) -> StateIndex: ...


class JsonCells:
    """``StateCodec`` of plain JSON cells: the state is its JSON object, ``wm`` one of its keys."""

    def new(self, name: str) -> Cell:
        return {"wm": -1}

    def watermark(self, state: Cell) -> int:
        return int(state.get("wm", -1))

    def set_watermark(self, state: Cell, watermark: int) -> None:
        state["wm"] = watermark

    def decode(self, name: str, raw: Cell) -> Cell:
        return raw

    def encode(self, state: Cell) -> Cell:
        return state


JSON_CELLS = JsonCells()


class Watermarked(Protocol):
    wm: int


W = TypeVar("W", bound=Watermarked)


class TypedCodec(Generic[W]):
    """What the codecs of typed states share: a new state is ``kind()``, the watermark its ``wm`` attribute."""

    def __init__(self, kind: Callable[[], W]) -> None:
        self._kind = kind

    def new(self, name: str) -> W:
        return self._kind()

    def watermark(self, state: W) -> int:
        return state.wm

    def set_watermark(self, state: W, watermark: int) -> None:
        state.wm = watermark


def interned(value: str | None) -> str | None:
    """One copy of a repeated name (a rep, a team, a stage) however many states hold it."""
    return None if value is None else intern(value)


class StateStore(Protocol[S]):
    """Named states per partition, loaded on assignment, written once per persisted batch."""

    @property
    def prefix(self) -> str:
        """What names this store's rows in the engine's table (the engine loads a partition store by store)."""
        ...

    def load_partition(self, partition: int, decoded: Mapping[str, Any] | None = None) -> int:
        """Load a partition's cells into memory (from ``decoded``, the partition's rows decoded ahead, when
        given); returns the highest watermark found (-1 if none)."""
        ...

    def drop_partition(self, partition: int) -> None: ...

    def cell(self, partition: int, name: str) -> S:
        """The state, created empty (watermark -1) if absent."""
        ...

    def get(self, partition: int, name: str) -> S | None: ...

    def loaded(self, partition: int) -> dict[str, S]:
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

    def items(self, partition: int) -> Iterator[tuple[str, S]]:
        """Every state of a loaded partition (a store that keeps states encoded decodes them all: not for hot
        paths; ``indexed`` answers without decoding)."""
        ...

    def indexed(self, partition: int) -> Iterator[tuple[str, float, float | None]]:
        """``(name, newest, watch)`` of every state (``StateIndex``; stores of an ``IndexedCodec`` only)."""
        ...


class StatesFactory(Protocol):
    """Makes an entity-state store by name, for JSON cells (``JSON_CELLS``) or a family's typed state."""

    def __call__(self, prefix: str, codec: StateCodec[S]) -> StateStore[S]: ...
