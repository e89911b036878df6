"""``simulate`` against a tiny recording server: signed JSON arrays, 503 retried byte for byte, nothing dropped."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from rich.console import Console

from salespulse.handlers.signatures import SIGNATURE_HEADER, SignatureError, verify
from salespulse.models.events import EventAdapter
from salespulse.simulate import simulate

SECRET = "test-secret"


@dataclass
class Recorder:
    """What the fake server saw; ``answer(n)`` picks the status of the n-th request (0-based)."""

    answer: Callable[[int], int]
    bodies: list[bytes] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(SECRET, body, request.headers.get(SIGNATURE_HEADER), tolerance_s=300)
        except SignatureError:
            self.bad_signatures += 1
            self.statuses.append(401)
            return web.json_response({"error": "bad signature"}, status=401)
        status = self.answer(len(self.bodies))
        self.bodies.append(body)
        self.statuses.append(status)
        if status == 202:
            return web.json_response({"accepted": len(orjson.loads(body))}, status=202)
        if status == 400:
            return web.json_response({"errors": [{"loc": ["0", "type"], "msg": "made-up problem"}]}, status=400)
        return web.json_response({"error": "event log unavailable"}, status=status)


async def serve(recorder: Recorder) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/webhooks/events", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: the OS picks a free one
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder(answer=lambda n: 503 if n == 0 else 202)
    async for url in serve(recorder):
        yield url, recorder


async def test_posts_signed_batches_and_retries_the_503(flaky: tuple[str, Recorder]) -> None:
    url, rec = flaky
    out = io.StringIO()
    started = time.monotonic()
    stats = await simulate(
        url,
        secret=SECRET,
        duration_s=2.0,
        leads_per_minute=120,
        reps=8,
        teams=2,
        seed=11,
        speedup=600.0,
        batch_size=50,
        console=Console(file=out, width=200),
    )
    assert time.monotonic() - started < 10

    assert rec.bad_signatures == 0
    assert rec.statuses[0] == 503 and rec.statuses[1] == 202
    assert rec.bodies[1] == rec.bodies[0]  # the same bytes again, not a fresh batch
    assert stats.retries >= 1 and stats.requests == len(rec.bodies)

    received = [e for body in rec.bodies[1:] for e in orjson.loads(body)]
    assert all(len(orjson.loads(body)) <= 50 for body in rec.bodies)
    ids = {e["event_id"] for e in received}
    assert len(ids) == len(received) == stats.generated == stats.posted == stats.accepted
    assert stats.unsent == 0 and stats.rejected == 0
    assert stats.generated > 100 and stats.leads > 10
    for e in received:
        EventAdapter.validate_python(e)
        assert e["event_id"].startswith("sim-11-")
    # Wall-clock timestamps: everything sent is "now-ish", not in the simulated future.
    newest = max(EventAdapter.validate_python(e).occurred_at.timestamp() for e in received)
    assert newest <= time.time() + 1
    assert "simulate done" in out.getvalue()


async def test_stop_ends_the_run_while_the_server_is_down() -> None:
    recorder = Recorder(answer=lambda n: 503)
    async for url in serve(recorder):
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        started = time.monotonic()
        stats = await simulate(
            url, secret=SECRET, duration_s=None, leads_per_minute=600, reps=4, teams=1, seed=1, speedup=10, stop=stop
        )
        assert time.monotonic() - started < 3
    assert stats.posted == 0 and stats.accepted == 0
    assert stats.unsent == stats.generated > 0  # counted, not silently dropped
    assert stats.retries >= 2
    assert len(set(recorder.bodies)) == 1  # only ever the first batch, retried


async def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was just free, and now has no listener
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    stats = await simulate(url, secret=None, duration_s=5, leads_per_minute=60, reps=2, teams=1, seed=2, stop=stop)
    assert stats.retries >= 1 and stats.posted == 0 and stats.unsent == stats.generated > 0


async def test_400_is_counted_as_rejected_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(answer=lambda n: 400)
    async for url in serve(recorder):
        stats = await simulate(
            url, secret=SECRET, duration_s=0.6, leads_per_minute=600, reps=4, teams=1, seed=3, speedup=10
        )
    assert stats.rejected == stats.posted == stats.generated > 0
    assert stats.retries == 0 and stats.accepted == 0
    assert "made-up problem" in caplog.text


async def test_a_wrong_secret_stops_the_run_at_once_with_the_reason() -> None:
    recorder = Recorder(answer=lambda n: 202)
    async for url in serve(recorder):
        started = time.monotonic()
        stats = await simulate(
            url, secret="not-the-servers", duration_s=None, leads_per_minute=600, reps=4, teams=1, seed=4,
            speedup=10, give_up_after_s=30,
        )
        assert time.monotonic() - started < 5
    assert recorder.bad_signatures == 1 and stats.accepted == 0
    assert stats.failure is not None and "answered 401" in stats.failure and "SALESPULSE_WEBHOOK_SECRET" in stats.failure


async def test_a_server_that_answers_503_for_give_up_after_s_stops_the_run() -> None:
    recorder = Recorder(answer=lambda n: 503)
    async for url in serve(recorder):
        started = time.monotonic()
        stats = await simulate(
            url, secret=SECRET, duration_s=None, leads_per_minute=600, reps=4, teams=1, seed=5, speedup=10,
            give_up_after_s=1.5,
        )
        assert 1.5 <= time.monotonic() - started < 6
    assert stats.failure is not None
    assert stats.failure.startswith(f"nothing delivered to {url}/webhooks/events for 1.5 s")
    assert "answered 503" in stats.failure
    assert stats.unsent == stats.generated > 0


async def test_give_up_after_counts_from_the_last_delivery_not_from_the_start() -> None:
    healthy_until = time.monotonic() + 1.5
    recorder = Recorder(answer=lambda n: 202 if time.monotonic() < healthy_until else 503)
    async for url in serve(recorder):
        stats = await simulate(
            url, secret=SECRET, duration_s=None, leads_per_minute=1200, reps=4, teams=1, seed=6, speedup=10,
            give_up_after_s=1.0,
        )
    assert stats.accepted > 0 and stats.failure is not None
    assert stats.last_ok_at - stats.started_at >= 1.0  # delivered past the first give_up_after_s ...
    assert stats.started_at + stats.elapsed_s - stats.last_ok_at >= 1.0  # ... and gave up 1 s after the last
