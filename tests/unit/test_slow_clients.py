"""Slow and excess clients (issue 11, finding 4), on raw sockets against the real server (``HttpServer``):
trickled headers and bodies get a 408 and a closed connection in time, a Content-Length larger than the body
gets its answer within the body timeout, connections beyond the cap get a 503, and normal clients notice none of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest_asyncio
from prometheus_client import CollectorRegistry

from salespulse.embedded.ports import free_port
from salespulse.handlers.http import HttpServer, build_http_app
from salespulse.handlers.webhooks import GenericWebhook
from tests.unit.crm_http import MemorySink

HEADER_TIMEOUT_S = 0.6
BODY_TIMEOUT_S = 0.8
MAX_CONNECTIONS = 4
EVENT = orjson.dumps({"event_id": "e1", "type": "lead.created", "occurred_at": "2026-11-22T09:30:00Z", "lead_id": "L1"})


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HttpServer]:
    registry = CollectorRegistry()
    webhook = GenericWebhook(MemorySink(), None, registry)  # type: ignore[arg-type]
    app = build_http_app(registry, {}, webhook, body_timeout_s=BODY_TIMEOUT_S)
    http = HttpServer(app, "127.0.0.1", free_port(), header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS)
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port)


async def answer_and_close(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if that takes longer than ``within_s``."""
    return await asyncio.wait_for(reader.read(), within_s)


async def test_headers_trickled_past_the_header_timeout_get_408_and_a_closed_connection(server: HttpServer) -> None:
    reader, writer = await connect(server)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for _ in range(40):
            writer.write(b"X")
            await asyncio.sleep(0.1)

    trickling = asyncio.ensure_future(trickle())
    try:
        answer = await answer_and_close(reader, HEADER_TIMEOUT_S + 2)
    finally:
        trickling.cancel()
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 1.5
    writer.close()


async def test_a_silent_connection_is_closed_after_the_header_timeout(server: HttpServer) -> None:
    reader, writer = await connect(server)
    assert (await answer_and_close(reader, HEADER_TIMEOUT_S + 2)).startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_content_length_larger_than_the_body_is_answered_within_the_body_timeout(server: HttpServer) -> None:
    reader, writer = await connect(server)
    started = time.monotonic()
    writer.write(b"POST /webhooks/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n" + EVENT)
    answer = await answer_and_close(reader, BODY_TIMEOUT_S + 2)
    assert answer.startswith(b"HTTP/1.1 408")
    assert BODY_TIMEOUT_S - 0.1 < time.monotonic() - started < BODY_TIMEOUT_S + 1.5
    writer.close()


async def test_a_body_trickled_past_the_body_timeout_gets_408(server: HttpServer) -> None:
    reader, writer = await connect(server)
    body = EVENT * 5
    writer.write(b"POST /webhooks/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))

    async def trickle() -> None:
        for byte in body:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    trickling = asyncio.ensure_future(trickle())
    try:
        assert (await answer_and_close(reader, BODY_TIMEOUT_S + 2)).startswith(b"HTTP/1.1 408")
    finally:
        trickling.cancel()
    writer.close()


async def test_connections_beyond_the_cap_get_503_and_a_freed_slot_serves_again(server: HttpServer) -> None:
    held = [await connect(server) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.05)
    reader, writer = await connect(server)
    assert (await answer_and_close(reader, 1.0)).startswith(b"HTTP/1.1 503")
    writer.close()
    held[0][1].close()
    await asyncio.sleep(0.1)
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await answer_and_close(reader, 2.0)).startswith(b"HTTP/1.1 200")
    for _, held_writer in held[1:]:
        held_writer.close()


async def test_keep_alive_requests_and_a_normal_post_are_served(server: HttpServer) -> None:
    reader, writer = await connect(server)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2.0)
        assert status.startswith(b"HTTP/1.1 200")
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(HEADER_TIMEOUT_S / 2)  # idle, but within the deadline
    writer.write(b"POST /webhooks/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(EVENT), EVENT))
    answer = await answer_and_close(reader, 2.0)
    assert answer.startswith(b"HTTP/1.1 202") and b'"accepted":1' in answer
    writer.close()
