"""The embedded run's durable event journal: what ingest accepted, on disk before the 202.

The embedded broker (Tansu 0.6.0) keeps everything in memory. Ingest therefore appends every record
it writes to the broker to this journal first, fsync'd (concurrent requests share one fsync), and a
start re-seeds the fresh broker from it: the worker then rebuilds its state by reprocessing, exact
because records keep their keys (so their partitions), their order and their Kafka timestamps (the
arrival times the SLA clock and the lead-response ``live`` rule use).

On disk: one segment file per UTC day of arrival (``YYYY-MM-DD.journal``), each a sequence of
``[length u32][crc32 u32][payload]`` records, payload ``[timestamp ms i64][topic len u8][topic]
[key len u16][key][value]``. A record torn by a crash (SIGKILL or power loss during an append) fails
its length or CRC check: reading stops there and the writer cuts it off before appending, so every
record before it is kept. Whole segments older than the retention are deleted at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

__all__ = ["JournalRecord", "JournalWriter", "read_journal", "segments", "trim_segments"]

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")  # payload length, crc32 of the payload
_HEAD = struct.Struct(">qB")  # timestamp ms, topic length
_KEY_LEN = struct.Struct(">H")
_SUFFIX = ".journal"
#: A payload longer than this is a torn or garbled length field, not a record (ingest bodies are <= 1 MiB).
_MAX_PAYLOAD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One Kafka record as ingest wrote it: topic, key, value and its timestamp (ms since the epoch)."""

    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int

    def encode(self) -> bytes:
        topic = self.topic.encode()
        payload = b"".join(
            (_HEAD.pack(self.timestamp_ms, len(topic)), topic, _KEY_LEN.pack(len(self.key)), self.key, self.value)
        )
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> JournalRecord:
        timestamp_ms, topic_len = _HEAD.unpack_from(payload, 0)
        at = _HEAD.size
        topic = payload[at : at + topic_len].decode()
        at += topic_len
        (key_len,) = _KEY_LEN.unpack_from(payload, at)
        at += _KEY_LEN.size
        return cls(topic, payload[at : at + key_len], payload[at + key_len :], timestamp_ms)


def segment_name(timestamp_ms: int) -> str:
    """The segment a record belongs to: the UTC day it arrived."""
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc).strftime("%Y-%m-%d") + _SUFFIX


def segments(directory: Path) -> list[Path]:
    """The segment files of a journal directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.name.endswith(_SUFFIX))


def _scan(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(end offset, payload) of each intact record from the start; stops at the first torn one."""
    end = 0
    while True:
        frame = fh.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            return
        length, crc = _FRAME.unpack(frame)
        if length > _MAX_PAYLOAD:
            return
        payload = fh.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        end += _FRAME.size + length
        yield end, payload


def read_journal(directory: Path) -> Iterator[JournalRecord]:
    """Every intact record, oldest segment first, in append order; logs what a torn tail cut off."""
    for path in segments(directory):
        size = path.stat().st_size
        good = 0
        with path.open("rb") as fh:
            for good, payload in _scan(fh):
                yield JournalRecord.decode(payload)
        if good < size:
            log.warning("journal %s: %d bytes after offset %d are torn (a crash during an append); ignored",
                        path.name, size - good, good)


def repair_tail(path: Path) -> int:
    """Cut a torn last record off ``path`` (so appends follow intact records); returns the bytes removed."""
    size = path.stat().st_size
    good = 0
    with path.open("rb") as fh:
        for good, _ in _scan(fh):
            pass
    if good < size:
        with path.open("r+b") as fh:
            fh.truncate(good)
            os.fsync(fh.fileno())
    return size - good


def trim_segments(directory: Path, keep_days: float, now: float | None = None) -> list[Path]:
    """Delete the segments of days that ended more than ``keep_days`` ago; returns what was deleted."""
    cutoff = datetime.fromtimestamp((time.time() if now is None else now) - keep_days * 86400, timezone.utc)
    deleted = []
    for path in segments(directory):
        try:
            day = datetime.strptime(path.name.removesuffix(_SUFFIX), "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # not ours: leave it
        if day + timedelta(days=1) <= cutoff:
            path.unlink()
            deleted.append(path)
    return deleted


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    """Appends records durably: :meth:`append` returns once they are fsync'd.

    Appends that arrive while an fsync runs are written together by the next one (group commit), so
    concurrent requests share the cost. A failed write is cut off again, so it cannot hide later records.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for path in segments(directory)[-1:]:
            removed = repair_tail(path)
            if removed:
                log.warning("journal %s: cut off a torn last record (%d bytes)", path.name, removed)
        self._file: BinaryIO | None = None
        self._file_name = ""
        self._queue: list[tuple[list[JournalRecord], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def append(self, records: Sequence[tuple[str, bytes, bytes, int]]) -> None:
        """Write (topic, key, value, timestamp ms) records and wait until they are on disk.

        Raises ``OSError`` if they could not be written.
        """
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(([JournalRecord(*record) for record in records], future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.shield(future)  # a cancelled request must not cancel its neighbours' fsync

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, [record for records, _ in batch for record in records])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _write(self, records: list[JournalRecord]) -> None:
        """Append to each record's day segment and fsync (runs in a worker thread)."""
        by_segment: dict[str, list[bytes]] = {}
        for record in records:
            by_segment.setdefault(segment_name(record.timestamp_ms), []).append(record.encode())
        for name, frames in by_segment.items():
            fh = self._segment(name)
            start = fh.tell()
            try:
                fh.write(b"".join(frames))
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                # Leave no partial record behind: the next append would follow it, unreadable.
                fh.seek(start)
                fh.truncate(start)
                raise

    def _segment(self, name: str) -> BinaryIO:
        if self._file is None or self._file_name != name:
            if self._file is not None:
                self._file.close()
            path = self.directory / name
            created = not path.exists()
            self._file = path.open("ab")
            self._file_name = name
            if created:
                _fsync_directory(self.directory)  # the new file's name must survive a crash too
        return self._file

    def close(self) -> None:
        """Close the open segment (appends still queued are not waited for)."""
        if self._file is not None:
            self._file.close()
            self._file = None
