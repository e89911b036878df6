"""Where a key sits in a TOML file, so a configuration error can name its line.

``tomllib`` (and tomlkit) keep no source positions, so the text is scanned for table headers and
``key =`` assignments. That is enough to point at the line of a bad or unknown key; a key the
scan cannot place (inside a multi-line inline structure) falls back to its nearest placed parent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=(.*)$")
_MULTILINE = ('"""', "'''")

KeyPath = tuple[str, ...]


def _parts(dotted: str) -> KeyPath:
    out = []
    for part in re.findall(_PART, dotted):
        if part.startswith('"'):
            out.append(json.loads(part))
        elif part.startswith("'"):
            out.append(part[1:-1])
        else:
            out.append(part)
    return tuple(out)


def key_lines(text: str) -> dict[KeyPath, int]:
    """Every table header and assigned key of ``text`` → the (1-based) line that first names it."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    open_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if open_string is not None:
            if line.count(open_string) % 2 == 1:
                open_string = None
            continue
        header = _HEADER.match(line)
        if header is not None:
            table = _parts(header.group(1))
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign is None:
            continue
        lines.setdefault(table + _parts(assign.group(1)), number)
        rest = assign.group(2)
        for quotes in _MULTILINE:
            if rest.count(quotes) % 2 == 1:
                open_string = quotes
                break
    return lines


def line_of(location: Iterable[object], lines: dict[KeyPath, int]) -> int | None:
    """The line of a key (a pydantic error location; list indexes are skipped), else of its nearest parent."""
    path = tuple(str(part) for part in location if isinstance(part, str) and part != "[key]")
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
