"""``salespulse replay FILE``: backfill history into ``salespulse.events``, measured but never alerted on.

Reads JSON Lines of canonical events, or CSV rows with a column mapping (``--map field=column``, constants
with ``--set field=value``). Each event is written keyed by its ``partition_key`` with the Kafka header
``salespulse-replay`` (the worker treats such records as infinitely late: counted in every metric, never an
SLA alert). The worker's ``event_id`` dedup makes a replay idempotent within its horizon
(``SALESPULSE_DEDUP_HORIZON_HOURS``, 72 h): replaying a file twice within it counts it once; an id seen
longer ago than that is forgotten, so do not replay the same file again days later.

Resumable: after every acknowledged chunk the line number reached is written atomically to the position file
(default ``FILE.position``); a new run starts after it. A bad row is reported with its line and field and
skipped (exit status 1 at the end), or stops the run with ``--strict`` (the position stays before it).
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from salespulse.kafka_connection import KafkaConnection, KafkaUnavailable, wait_for_kafka
from salespulse.models.errors import field_errors
from salespulse.models.events import INTERNAL_EVENT_TYPES, MAX_FUTURE_SKEW, Event, EventAdapter, event_to_json
from salespulse.topics import EVENTS_TOPIC, REPLAY_HEADER

#: Events sent between two position-file updates.
CHUNK = 500


class ReplayError(Exception):
    """The replay cannot go on (a bad row with ``--strict``, an unreadable file, the broker); the message says why."""


@dataclass(frozen=True)
class BadRow:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f" field {self.field}:" if self.field else ""
        return f"line {self.line}:{where} {self.message}"


@dataclass
class ReplayStats:
    sent: int = 0
    skipped_before: int = 0  # lines at or before the saved position
    bad: list[BadRow] = field(default_factory=list)


def _event_from(line: int, data: Any) -> Event | BadRow:
    if not isinstance(data, dict):
        return BadRow(line, "", "an event must be a JSON object")
    try:
        event = EventAdapter.validate_python(data)
    except ValidationError as exc:
        first = field_errors(exc)[0]
        return BadRow(line, first.field, first.message)
    if event.type in INTERNAL_EVENT_TYPES:
        return BadRow(line, "type", f"{event.type!r} is internal: only the worker writes it")
    if event.occurred_at > datetime.now(timezone.utc) + MAX_FUTURE_SKEW:
        return BadRow(line, "occurred_at", "in the future")
    return event


def read_jsonl(path: Path) -> Iterator[tuple[int, Event | BadRow]]:
    """(line number, event or the reason it is bad) for every non-blank line."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, BadRow(number, "", f"not JSON: {exc}")
                continue
            yield number, _event_from(number, data)


def read_csv(path: Path, columns: dict[str, str], constants: dict[str, str]) -> Iterator[tuple[int, Event | BadRow]]:
    """Rows as events: ``columns`` maps event fields to CSV headers; empty cells are left out. Line 1 is the header."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [column for column in columns.values() if column not in (reader.fieldnames or [])]
        if missing:
            raise ReplayError(f"{path}: no column(s) {', '.join(missing)} in the header {reader.fieldnames}")
        for row in reader:
            number = reader.line_num
            data: dict[str, Any] = dict(constants)
            for name, column in columns.items():
                value = (row.get(column) or "").strip()
                if value:
                    data[name] = value
            yield number, _event_from(number, data)


def load_position(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        raise ReplayError(f"{path}: not a position file (expected a line number)") from None


def save_position(path: Path, line: int) -> None:
    """Atomically: a crash leaves the old or the new position, never a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{line}\n")
    os.replace(tmp, path)


class RateLimiter:
    """At most ``rate`` events per second on average (``None``: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.count = 0

    async def wait(self) -> None:
        self.count += 1
        if self.rate:
            ahead = self.count / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def replay(
    rows: Iterator[tuple[int, Event | BadRow]],
    kafka: KafkaConnection,
    position_file: Path,
    rate: float | None = None,
    strict: bool = False,
    on_progress: Any = None,
    connect_timeout_s: float = 10.0,
) -> ReplayStats:
    """Send every good row after the saved position; returns what was sent and what was bad."""
    start_after = load_position(position_file)
    stats = ReplayStats()
    try:
        await wait_for_kafka(kafka, connect_timeout_s)
    except KafkaUnavailable as exc:
        raise ReplayError(str(exc)) from None
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=5)
    try:
        await producer.start()
    except Exception as exc:
        raise ReplayError(f"cannot reach Kafka at {kafka.describe()}: {type(exc).__name__}: {exc}") from None
    limiter = RateLimiter(rate)
    pending: list[asyncio.Future[Any]] = []
    last_line = start_after
    headers = [(REPLAY_HEADER, b"1")]
    try:
        for line, item in rows:
            if line <= start_after:
                stats.skipped_before += 1
                continue
            if isinstance(item, BadRow):
                if strict:
                    await _flush(pending, position_file, last_line)
                    raise ReplayError(f"{item} (stopped: --strict; position kept at line {last_line})")
                stats.bad.append(item)
            else:
                await limiter.wait()
                pending.append(
                    await producer.send(
                        EVENTS_TOPIC, key=item.partition_key.encode(), value=event_to_json(item), headers=headers
                    )
                )
                stats.sent += 1
            last_line = line
            if len(pending) >= CHUNK:
                await _flush(pending, position_file, last_line)
            if on_progress is not None:
                on_progress(line)
        await _flush(pending, position_file, last_line)
    finally:
        await producer.stop()
    return stats


async def _flush(pending: list[asyncio.Future[Any]], position_file: Path, line: int) -> None:
    """Wait for the broker's acks, then record how far the file is done."""
    if pending:
        await asyncio.gather(*pending)
        pending.clear()
    save_position(position_file, line)
