"""Per-entity alerts to Alertmanager's API v2 (``POST /api/v2/alerts``), one delivery queue per URL.

Alertmanager identifies an alert by its label set, so the labels hold no timestamp and never change
after an alert fires (the family freezes rep, team and source at firing): a resend, a crashed
worker's successor sending again from state, or a second URL never makes a second alert. A firing
alert is posted without ``endsAt`` (Alertmanager ends it after its ``resolve_timeout`` unless it is
sent again, which the alert clock does from state every ``resend_seconds``); a resolved one carries
``endsAt``.

Delivery: each URL has a bounded queue holding the newest version of each alert; a failed post is
retried with exponential backoff (0.5 s to 10 s) while newer versions replace older ones in the queue.
A queue that is full drops its oldest alert (counted): the next resend from state brings it back.

``lead_id`` as a label: lead ids are the CRMs' opaque record ids (``0-1/123456``, ``00Q...``), not names
or e-mail addresses, so the rule "no personal data in labels" holds; a CRM whose ids were e-mail
addresses must be mapped to its record ids in ``[crm]`` first (docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

#: The ``alert`` of the contract's alert JSON -> (Alertmanager ``alertname``, ``severity``, entity label).
RULES: dict[str, tuple[str, str, str]] = {
    "lead_response_sla": ("SalespulseLeadResponseSlaBreached", "critical", "lead_id"),
    "lead_response_warning": ("SalespulseLeadResponseSlaWarning", "warning", "lead_id"),
    "lead_going_cold": ("SalespulseLeadGoingCold", "warning", "lead_id"),
    "deal_stalled": ("SalespulseDealStalled", "warning", "deal_id"),
    "rep_no_activity": ("SalespulseRepNoActivity", "warning", "rep_id"),
}
MAX_BACKOFF_S = 10.0
FIRST_BACKOFF_S = 0.5

LeadUrl = Callable[[Mapping[str, Any]], str | None]


def am_alert(alert: Mapping[str, Any], link: LeadUrl) -> dict[str, Any]:
    """The Alertmanager API v2 alert of one contract alert JSON (``startsAt``: the rule's deadline)."""
    alertname, severity, entity = RULES[alert["alert"]]
    labels = {
        "alertname": alertname,
        "severity": severity,
        "team": alert.get("team") or "unassigned",
        "rep": alert.get("rep_id") or "unassigned",
        "source": alert.get("source") or "unknown",
    }
    if entity != "rep_id":
        labels[entity] = alert[entity]
    age = float(alert.get("age_seconds") or 0.0)
    annotations = {
        "summary": f"{alert['alert']} {alert.get(entity)} ({labels['team']}, {labels['rep']})",
        "age": f"{int(age // 60)}m {int(age % 60)}s",
        "age_seconds": f"{age:.0f}",
        "deadline": alert["deadline"],
    }
    url = link(alert)
    if url:
        annotations["lead_url"] = url
    if "sla_deadline" in alert:
        annotations["sla_deadline"] = alert["sla_deadline"]
    out: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": alert["deadline"]}
    if url:
        out["generatorURL"] = url
    if alert["status"] == "resolved":
        out["endsAt"] = alert["emitted_at"]
    return out


def fingerprint(alert: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(alert["labels"].items()))


class AlertmanagerMetrics:
    """``salespulse_alertmanager_alerts_{sent,failed,dropped}_total{url}`` and ``..._queued{url}``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.sent = Counter("salespulse_alertmanager_alerts_sent", "Alerts Alertmanager accepted, by URL.", ["url"],
                            registry=registry)
        self.failed = Counter("salespulse_alertmanager_alerts_failed",
                              "Alerts in failed posts (retried with backoff), by URL.", ["url"], registry=registry)
        self.dropped = Counter("salespulse_alertmanager_alerts_dropped",
                               "Alerts dropped from a full queue (the next resend from state brings them back), by URL.",
                               ["url"], registry=registry)
        self.queued = Gauge("salespulse_alertmanager_alerts_queued", "Alerts waiting for delivery, by URL.", ["url"],
                            registry=registry)


class _Target:
    """One Alertmanager URL: its queue (newest version per label set) and its delivery loop."""

    def __init__(self, url: str, metrics: AlertmanagerMetrics, max_queue: int, batch: int, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v2/alerts"
        self.metrics = metrics
        self.max_queue = max_queue
        self.batch = batch
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.queue: OrderedDict[tuple[tuple[str, str], ...], dict[str, Any]] = OrderedDict()
        self.wake = asyncio.Event()
        self.backoff = 0.0

    def put(self, alerts: Iterable[dict[str, Any]]) -> None:
        for alert in alerts:
            key = fingerprint(alert)
            self.queue.pop(key, None)
            self.queue[key] = alert
            if len(self.queue) > self.max_queue:
                self.queue.popitem(last=False)
                self.metrics.dropped.labels(self.url).inc()
        self.metrics.queued.labels(self.url).set(len(self.queue))
        self.wake.set()

    async def run(self, session: aiohttp.ClientSession, stopping: Callable[[], bool]) -> None:
        while not stopping():
            if not self.queue:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
            await self.deliver_once(session)
            if self.backoff:
                await asyncio.sleep(self.backoff)

    async def deliver_once(self, session: aiohttp.ClientSession) -> bool:
        """Post up to ``batch`` queued alerts; True if Alertmanager took them (else they stay queued)."""
        taken = list(self.queue.items())[: self.batch]
        if not taken:
            return True
        body = [alert for _, alert in taken]
        try:
            async with session.post(self.endpoint, json=body, timeout=self.timeout) as response:
                if response.status >= 300:
                    raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        except Exception as exc:  # noqa: BLE001 - down, refused, timed out, or a 4xx/5xx: retry with backoff
            self.metrics.failed.labels(self.url).inc(len(body))
            self.backoff = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, self.backoff * 2))
            log.warning("Alertmanager %s did not take %d alert(s): %s; retrying in %.1fs", self.url, len(body), exc,
                        self.backoff)
            return False
        for key, alert in taken:
            if self.queue.get(key) is alert:  # a newer version queued meanwhile is sent next
                del self.queue[key]
        self.backoff = 0.0
        self.metrics.sent.labels(self.url).inc(len(body))
        self.metrics.queued.labels(self.url).set(len(self.queue))
        return True


class AlertmanagerSink:
    """Sends contract alert JSONs to every configured Alertmanager (a cluster's peers deduplicate)."""

    def __init__(
        self,
        urls: Iterable[str],
        lead_url: LeadUrl = lambda alert: None,
        registry: CollectorRegistry | None = None,
        max_queue: int = 100_000,
        batch: int = 1_000,
        timeout_s: float = 5.0,
    ) -> None:
        self.metrics = AlertmanagerMetrics(registry)
        self.lead_url = lead_url
        self.targets = [_Target(url, self.metrics, max_queue, batch, timeout_s) for url in urls]
        if not self.targets:
            raise ValueError("AlertmanagerSink needs at least one URL")
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def put(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """Queue alerts for delivery (never blocks, never raises for a down Alertmanager)."""
        converted = [am_alert(alert, self.lead_url) for alert in alerts if alert.get("alert") in RULES]
        if converted:
            for target in self.targets:
                target.put(converted)

    @property
    def queued(self) -> int:
        return max(len(target.queue) for target in self.targets)

    async def start(self) -> None:
        self._stopping = False
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(t.run(self._session, lambda: self._stopping)) for t in self.targets]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_urls(value: str | None) -> list[str]:
    """``SALESPULSE_ALERTMANAGER_URL``: one or more ``http(s)://host:port`` separated by commas."""
    urls = [part.strip().rstrip("/") for part in (value or "").split(",") if part.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"expected http(s)://host:port, got {url!r}")
    return urls
