"""Slow and excess clients at the socket: a connection cap and a deadline for each request's headers.

aiohttp has neither (a client trickling its headers holds a connection for as long as it likes), so the
server's protocol factory is wrapped: beyond ``max_connections`` a new connection gets a 503 and is closed;
a connection must deliver complete request headers within ``header_timeout_s`` of opening, or of its
previous response (then it gets a 408 and is closed). The body has its own deadline, in ``body_deadline``:
the HTTP middleware reads it before the handler runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
_HEADER_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ConnectionGuard:
    """A protocol factory around aiohttp's (``runner.server``), counting and timing its connections."""

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], header_timeout_s: float, max_connections: int
    ) -> None:
        self.factory = factory
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        return GuardedProtocol(self)


class GuardedProtocol(asyncio.Protocol):
    """One connection: refused over the cap, else aiohttp's protocol with a header deadline around it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handling = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        guard = self.guard
        if guard.open >= guard.max_connections:
            guard.refused += 1
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        guard.open += 1
        self.inner = guard.factory()
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.inner is not None:
            self.guard.open -= 1
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    # -- called by the middleware ---------------------------------------------------------------------

    def request_started(self) -> None:
        """The headers of a request are in (aiohttp runs its handler): the header deadline is met."""
        self._handling = True
        self._disarm()

    def request_finished(self) -> None:
        """A response went out: the next request's headers are due within the deadline."""
        self._handling = False
        self._arm()

    # -- the deadline -----------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self.guard.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._handling or self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():  # a response still going out to a slow reader
            self._arm()
            return
        self.guard.timed_out += 1
        self.transport.write(_HEADER_TIMEOUT)
        self.transport.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded_protocol(request: web.Request) -> GuardedProtocol | None:
    """The connection's guard, when the server runs behind a ``ConnectionGuard`` (not in aiohttp's test server)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedProtocol) else None


def body_deadline(body_timeout_s: float, max_body_bytes: int) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware: the header deadline is met once a handler runs; a request body must arrive whole within
    ``body_timeout_s`` (408 and the connection closed otherwise: a Content-Length larger than the body sent
    gets its answer then); a body declared over ``max_body_bytes`` is left to the handler's 413."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = guarded_protocol(request)
        if protocol is not None:
            protocol.request_started()
        try:
            too_large = request.content_length is not None and request.content_length > max_body_bytes
            if request.body_exists and not too_large:
                try:
                    await asyncio.wait_for(request.read(), body_timeout_s)  # kept: the handler's read() gets it
                except asyncio.TimeoutError:
                    response = web.json_response(
                        {"error": f"request body not received within {body_timeout_s:g} s"}, status=408
                    )
                    response.force_close()
                    return response
                except web.HTTPRequestEntityTooLarge:  # a chunked body over the limit
                    return web.json_response({"error": f"body over {max_body_bytes} bytes"}, status=413)
            return await handler(request)
        finally:
            if protocol is not None:
                protocol.request_finished()

    return middleware
