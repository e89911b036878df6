"""Reads of Faust's private consumer state, in one place (pinned by tests/unit/test_faust_internals.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP


def read_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """Per partition, the offset Faust's consumer has read up to: set to the committed offset at seek.

    ``Consumer._read_offset`` (faust-streaming 0.15); empty when the consumer has none yet.
    """
    found: Mapping[TP, int | None] = getattr(consumer, "_read_offset", {})
    return found
