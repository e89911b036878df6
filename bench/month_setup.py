"""What the in-process month benchmarks share: records placed on partitions, and a worker's processor over a dict.

Imports ``salespulse`` from ``sys.path`` as its importer set it (``month_cost.py --code`` measures another
checkout's), so it changes no path itself.
"""

from __future__ import annotations

from salespulse.engine.stores import family_context

from collections.abc import Iterable, MutableMapping
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka.partitioner import murmur2

from salespulse.config import Config
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.families import registry


def placed(records: Iterable[tuple[bytes, bytes]], partitions: int) -> list[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of keyed records, placed by Kafka's default partitioner."""
    offsets = [0] * partitions
    out: list[tuple[int, int, bytes]] = []
    for key, value in records:
        partition = (murmur2(key) & 0x7FFFFFFF) % partitions
        out.append((partition, offsets[partition], value))
        offsets[partition] += 1
    return out


def month_processor(table: MutableMapping[str, bytes]) -> tuple[list[Any], BatchProcessor]:
    """All four families built from the registry over ``table`` (UTC, 35-day retention), and their processor."""
    families = [
        registry.load(name).build(family_context(table, Config(), ZoneInfo("UTC"), 35 * 86400, 300))
        for name in registry.NAMES
    ]
    return families, BatchProcessor(DedupIndex(table, 72 * 3600), families, lambda record, why: None)
