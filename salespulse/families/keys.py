"""Structured ids of the all-time scopes (``(rep, team)``, ``(pipeline, from, to)`` ...): tuples in code.

Cells are JSON objects, so a structured id is stored as one string; this module is the only place
that encodes and decodes it. Every other module passes tuples.
"""

from __future__ import annotations

_SEP = "\t"  # never part of an id: ids are normalised labels, and the contract forbids control characters

Key = tuple[str, ...]


def encode(parts: Key) -> str:
    """The cell key of a structured id."""
    return _SEP.join(parts)


def decode(stored: str) -> Key:
    """The structured id of a cell key written by ``encode``."""
    return tuple(stored.split(_SEP))
