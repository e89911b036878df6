"""HubSpot's CRM API, read-only, for the enricher: objects (v3), associations (v4), deal pipelines, owners.

aiohttp rather than the official ``hubspot-api-client`` here: that client is synchronous (urllib3), so every
call would take a thread off the event loop, and its retry (urllib3 ``Retry``) cannot share one rate budget
between concurrent calls. The portal's limit is shared by every app (100 or 190 calls per 10 s), so all
calls go through one token bucket (``aiolimiter``); a 429 waits for ``Retry-After`` (else the
``X-HubSpot-RateLimit-Interval-Milliseconds`` window), a 5xx or a lost connection backs off exponentially.
``salespulse crm check`` uses the official client (a CLI can block).

Errors: :class:`ObjectGone` (404: deleted since the webhook), :class:`ApiRefused` (another 4xx: this request
will never work) and :class:`ApiUnavailable` (429 / 5xx / network / 401 / 403 after the retries: try again
later, nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

#: Engagement object type ids of ``object.*`` webhooks → the API's object type names.
ENGAGEMENT_TYPES = {"0-48": "calls", "0-49": "emails", "0-47": "meetings", "0-46": "notes", "0-27": "tasks"}
PIPELINE_CACHE_S = 300.0


class ApiError(Exception):
    """A HubSpot API request failed; ``reason`` is a metric label (no personal data)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApiUnavailable(ApiError):
    """Rate limited, server error, network or credentials: retry the whole record later."""


class ApiRefused(ApiError):
    """HubSpot refused this request for good (a 4xx other than 401/403/404/429)."""


class ObjectGone(ApiError):
    """The object does not exist (any more): deleted or merged since the webhook was sent."""


class ApiFailures:
    """``salespulse_crm_api_failures_total{crm, reason}``: failed API calls, retried or not."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "salespulse_crm_api_failures",
            "CRM API calls that failed (rate_limited, server_error, network, unauthorized, gone, refused); "
            "retried unless gone or refused.",
            ["crm", "reason"],
            registry=registry,
        )

    def count(self, reason: str) -> None:
        self.counter.labels("hubspot", reason).inc()


def retry_after_s(headers: Any, default: float) -> float:
    """Seconds to wait after a 429: ``Retry-After``, else the rate-limit interval header, else ``default``."""
    for name, scale in (("Retry-After", 1.0), ("X-HubSpot-RateLimit-Interval-Milliseconds", 0.001)):
        value = headers.get(name)
        if value:
            try:
                return min(max(float(value) * scale, 0.0), 60.0)
            except ValueError:
                continue
    return default


class HubSpotApi:
    """One session, one token bucket; call :meth:`close` when done."""

    def __init__(
        self,
        base_url: str,
        token: str,
        failures: ApiFailures,
        requests_per_10s: int = 90,
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.failures = failures
        self.limiter = AsyncLimiter(requests_per_10s, 10.0)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_attempts, self.backoff_s, self._sleep = max_attempts, backoff_s, sleep
        self._session: aiohttp.ClientSession | None = None
        self._pipelines: tuple[float, list[dict[str, Any]]] | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` as JSON, with the rate limit and the retries described above."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"Authorization": f"Bearer {self._token}"}
            )
        backoff, wait = self.backoff_s, 0.0
        last = "no attempt"
        for _ in range(self.max_attempts):
            if wait:
                await self._sleep(wait)
            async with self.limiter:
                try:
                    async with self._session.get(self.base_url + path, params=params) as response:
                        if response.status == 200:
                            body = await response.json(content_type=None)
                            if not isinstance(body, dict):
                                raise ApiRefused(f"GET {path}: not a JSON object", "refused")
                            return body
                        status, headers = response.status, response.headers
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.failures.count("network")
                    last = f"{type(exc).__name__}"
                    wait, backoff = backoff, min(backoff * 2, 30.0)
                    continue
            if status == 429:
                self.failures.count("rate_limited")
                # HubSpot's own wait, no backoff on top of it.
                wait = retry_after_s(headers, backoff)
                log.warning("HubSpot rate limit hit on GET %s; waiting %.1f s", path.split("?")[0], wait)
                last = "429 rate limited"
                continue
            if status >= 500:
                self.failures.count("server_error")
                last = f"{status} server error"
                wait, backoff = backoff, min(backoff * 2, 30.0)
                continue
            if status in (401, 403):
                self.failures.count("unauthorized")
                raise ApiUnavailable(
                    f"HubSpot answered {status}: check SALESPULSE_HUBSPOT_ACCESS_TOKEN and its scopes", "unauthorized"
                )
            if status == 404:
                self.failures.count("gone")
                raise ObjectGone(f"GET {path}: 404 not found", "gone")
            self.failures.count("refused")
            raise ApiRefused(f"GET {path}: HubSpot answered {status}", "refused")
        raise ApiUnavailable(f"GET {path}: gave up after {self.max_attempts} attempts ({last})", "unavailable")

    async def object(self, object_type: str, object_id: str, properties: Iterable[str]) -> dict[str, str | None]:
        """``GET /crm/v3/objects/{type}/{id}?properties=…``: the object's properties."""
        body = await self.get(f"/crm/v3/objects/{object_type}/{object_id}", {"properties": ",".join(properties)})
        props = body.get("properties")
        if not isinstance(props, dict):
            raise ApiRefused(f"{object_type} {object_id}: no properties in the answer", "refused")
        return {k: (v if isinstance(v, str) or v is None else str(v)) for k, v in props.items()}

    async def associated(self, object_type: str, object_id: str, to_type: str, limit: int = 10) -> list[str]:
        """``GET /crm/v4/objects/{type}/{id}/associations/{to_type}``: the associated ids, lowest first."""
        body = await self.get(f"/crm/v4/objects/{object_type}/{object_id}/associations/{to_type}", {"limit": "100"})
        results = body.get("results")
        if not isinstance(results, list):
            raise ApiRefused(f"{object_type} {object_id}: no associations list in the answer", "refused")
        ids = {str(r["toObjectId"]) for r in results if isinstance(r, dict) and r.get("toObjectId") is not None}
        return sorted(ids, key=lambda i: (len(i), i))[:limit]

    async def deal_pipelines(self, max_age_s: float = PIPELINE_CACHE_S) -> list[dict[str, Any]]:
        """``GET /crm/v3/pipelines/deals`` (cached ``max_age_s``): pipelines with their stages."""
        now = time.monotonic()
        if self._pipelines is not None and now - self._pipelines[0] < max_age_s:
            return self._pipelines[1]
        body = await self.get("/crm/v3/pipelines/deals")
        results = body.get("results")
        if not isinstance(results, list):
            raise ApiRefused("pipelines: no results list in the answer", "refused")
        self._pipelines = (now, [p for p in results if isinstance(p, dict)])
        return self._pipelines[1]
