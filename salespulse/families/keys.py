"""Structured ids (``(rep, team)``, ``(pipeline, from, to)``, a stage's ``(pipeline, stage)`` ...): tuples in code.

Cells are JSON objects, so a structured id is stored as one string; this module is the only place that
encodes and decodes it. Every part but the last is escaped (``\\`` as ``\\\\``, the separator as ``\\`` +
its code), so no value can shift the boundary between parts and two different tuples never share an id.
Parts without a backslash or the separator, which is every id validated at the edge, encode as plain
joins: state written by earlier versions keeps its ids. Decoding is lenient with a stray backslash (an
old value) and strict with control characters, which no valid part holds: an id written before they were
refused raises ``MalformedId``, so its one series is skipped instead of exported with garbage labels.
"""

from __future__ import annotations

import re
from functools import lru_cache

Key = tuple[str, ...]
_CODES = {"\t": "t"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedId(ValueError):
    """A structured id that does not decode into its parts (written before control characters were refused)."""


def _escape(part: str, sep: str) -> str:
    return part.replace("\\", "\\\\").replace(sep, "\\" + _CODES.get(sep, sep))


@lru_cache(maxsize=1 << 16)
def encode(parts: Key, sep: str = "\t") -> str:
    """The stored id of ``parts``; ``decode(encode(parts), len(parts))`` gives them back, whatever they hold.

    Memoised: the same few thousand ids (a rep and their team, a pipeline's stages) are encoded for every
    event and every rendered partial; a bounded cache keeps a high-cardinality id from growing it."""
    *head, last = parts
    return "".join(_escape(part, sep) + sep for part in head) + last


def decode(ident: str, count: int, sep: str = "\t") -> Key:
    """The ``count`` parts of an id made by ``encode``; raises ``MalformedId`` if it holds fewer, or control
    characters in any part."""
    code = _CODES.get(sep, sep)
    parts: list[str] = []
    current: list[str] = []
    index, end = 0, len(ident)
    while index < end and len(parts) < count - 1:
        char = ident[index]
        if char == "\\" and index + 1 < end and ident[index + 1] in ("\\", code):
            current.append("\\" if ident[index + 1] == "\\" else sep)
            index += 2
            continue
        if char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    if len(parts) < count - 1:
        raise MalformedId(f"expected {count} parts in {ident!r}")
    parts.append("".join(current) + ident[index:])
    if any(_CONTROL.search(part) for part in parts):
        raise MalformedId(f"control character in {ident!r}")
    return tuple(parts)
