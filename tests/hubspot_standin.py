"""A local stand-in for HubSpot's CRM API, serving the response shapes HubSpot documents (HubSpot itself cannot
be reached from the tests): objects v3 (with ``propertiesWithHistory``), associations v4, deal pipelines,
owners, the 401 / 404 error bodies, 429 with ``Retry-After`` and the ``X-HubSpot-RateLimit-*`` headers, and
5xx. Tests script faults (``fail_next``) and slowness (``delay_s``) and read the requests it got.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from salespulse.embedded.ports import free_port

TOKEN = "pat-na1-standin-token"


def _error(status: int, category: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class HubSpotStandIn:
    """The stand-in's state: objects by (type, id), associations, pipelines, owners and scripted faults."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    associations: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    owners: list[dict[str, Any]] = field(default_factory=list)
    #: (status, headers) answered to the next requests, in order, before any real answer.
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def put(self, object_type: str, object_id: str | int, contacts: list[str | int] = (), **properties: Any) -> None:
        """An object with its properties (as HubSpot returns them: text) and its associated contacts."""
        key = (object_type, str(object_id))
        self.objects[key] = {k: (None if v is None else str(v)) for k, v in properties.items()}
        if contacts:
            self.associations[(object_type, str(object_id), "contacts")] = [str(c) for c in contacts]

    def rate_limit(self, retry_after_s: int = 1, times: int = 1) -> None:
        headers = {"Retry-After": str(retry_after_s), "X-HubSpot-RateLimit-Max": "100",
                   "X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                   "X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "249000"}
        self.fail_next += [(429, headers)] * times

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/crm/v3/objects/{type}/{id}", self._object)
        app.router.add_get("/crm/v4/objects/{type}/{id}/associations/{to}", self._associations)
        app.router.add_get("/crm/v3/pipelines/{type}", self._pipelines)
        app.router.add_get("/crm/v3/owners", self._owners)
        app.router.add_get("/crm/v3/owners/", self._owners)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "INVALID_AUTHENTICATION",
                          "Authentication credentials not found. This API supports OAuth 2.0 authentication.")
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            if status == 429:
                return _error(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                              headers)
            return _error(status, "INTERNAL_ERROR", "internal error", headers)
        return await handler(request)

    async def _object(self, request: web.Request) -> web.Response:
        object_type, object_id = request.match_info["type"], request.match_info["id"]
        stored = self.objects.get((object_type, object_id))
        if stored is None:
            return web.json_response({"status": "error", "message": "Object not found.  objectId are usually numeric.",
                                      "correlationId": str(uuid.uuid4()), "context": {"id": [object_id]},
                                      "category": "OBJECT_NOT_FOUND"}, status=404)
        wanted = [p for p in request.query.get("properties", "").split(",") if p]
        props = {"hs_object_id": object_id, **{p: stored.get(p) for p in wanted}}
        body: dict[str, Any] = {"id": object_id, "properties": props, "createdAt": "2026-01-01T00:00:00Z",
                                "updatedAt": "2026-01-01T00:00:00Z", "archived": False}
        with_history = [p for p in request.query.get("propertiesWithHistory", "").split(",") if p]
        if with_history:
            history = self.history.get((object_type, object_id), {})
            body["propertiesWithHistory"] = {
                p: history.get(p) or ([{"value": stored[p], "timestamp": "2026-01-01T00:00:00Z",
                                        "sourceType": "CRM_UI"}] if stored.get(p) else [])
                for p in with_history
            }
        return web.json_response(body)

    async def _associations(self, request: web.Request) -> web.Response:
        key = (request.match_info["type"], request.match_info["id"], request.match_info["to"])
        if (key[0], key[1]) not in self.objects:
            return _error(404, "OBJECT_NOT_FOUND", "Object not found.")
        results = [{"toObjectId": int(i), "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 194,
                                                                 "label": None}]}
                   for i in self.associations.get(key, [])]
        return web.json_response({"results": results})

    async def _pipelines(self, request: web.Request) -> web.Response:
        return web.json_response({"results": self.pipelines})

    async def _owners(self, request: web.Request) -> web.Response:
        return web.json_response({"results": self.owners})


def pipeline(pipeline_id: str, label: str, stages: list[tuple[str, str, float, bool]]) -> dict[str, Any]:
    """A deal pipeline as ``GET /crm/v3/pipelines/deals`` lists it; stages are (id, label, probability, closed)."""
    return {
        "id": pipeline_id, "label": label, "displayOrder": 0, "archived": False,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        "stages": [
            {"id": sid, "label": slabel, "displayOrder": n, "archived": False, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
             "metadata": {"isClosed": "true" if closed else "false", "probability": str(probability)},
             "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}
            for n, (sid, slabel, probability, closed) in enumerate(stages)
        ],
    }


def owner(owner_id: str, first: str, last: str) -> dict[str, Any]:
    return {"id": owner_id, "email": f"{first.lower()}@example.com", "type": "PERSON", "firstName": first,
            "lastName": last, "userId": int(owner_id) + 1, "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z", "archived": False}


@asynccontextmanager
async def serving(standin: HubSpotStandIn) -> AsyncIterator[HubSpotStandIn]:
    """Serve the stand-in on 127.0.0.1 (a free port) for the duration of the block; ``standin.url`` is set."""
    runner = web.AppRunner(standin.app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        await runner.cleanup()
