"""The board's HTTP routes: the page at ``/``, its static files, a JSON snapshot and server-sent events.

- ``GET /``: the page (plain HTML, CSS and JS shipped in the package; nothing from a CDN);
- ``GET /board/static/<file>``: ``board.css``, ``board.js``;
- ``GET /api/board``: the current snapshot as JSON;
- ``GET /board/events``: ``text/event-stream``, one ``snapshot`` event now and one per change.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files

from aiohttp import web

from salespulse.board.live import BoardHub

_STATIC = files("salespulse.board") / "static"
_TYPES = {"board.css": "text/css", "board.js": "text/javascript", "index.html": "text/html"}
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: Pages and assets never leave this origin: the page loads nothing from elsewhere.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static(name: str) -> web.Response:
    body = (_STATIC / name).read_bytes()
    return web.Response(
        body=body,
        headers={"Content-Type": f"{_TYPES[name]}; charset=utf-8", "Cache-Control": "no-cache", **_SECURITY_HEADERS},
    )


def add_board_routes(app: web.Application, hub: BoardHub) -> None:
    """Serve the live board from ``hub`` on ``app``."""
    closing = asyncio.Event()

    async def page(_: web.Request) -> web.Response:
        return _static("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _TYPES or name == "index.html":
            raise web.HTTPNotFound()
        return _static(name)

    async def snapshot(_: web.Request) -> web.Response:
        return web.Response(body=await hub.current(), content_type="application/json", headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue = hub.subscribe()
        try:
            await response.write(b"retry: 2000\nevent: snapshot\ndata: " + await hub.current() + b"\n\n")
            while not closing.is_set():
                getting = asyncio.ensure_future(queue.get())
                stopping = asyncio.ensure_future(closing.wait())
                done, pending = await asyncio.wait({getting, stopping}, timeout=KEEPALIVE_S, return_when="FIRST_COMPLETED")
                for task in pending:
                    task.cancel()
                if getting in done:
                    await response.write(b"event: snapshot\ndata: " + getting.result() + b"\n\n")
                elif not done:
                    await response.write(b": keepalive\n\n")
        except ConnectionResetError:
            pass  # the viewer left
        finally:
            hub.unsubscribe(queue)
        return response

    async def on_shutdown(_: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", page)
    app.router.add_get("/board/static/{name}", asset)
    app.router.add_get("/api/board", snapshot)
    app.router.add_get("/board/events", events)
