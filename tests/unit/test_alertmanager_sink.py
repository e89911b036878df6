"""The Alertmanager sink: the API v2 alert of a contract alert, stable labels, the bounded queue, retries."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from salespulse.config import Config
from salespulse.embedded.ports import free_port
from salespulse.outputs.alertmanager import AlertmanagerSink, am_alert, fingerprint, parse_urls
from salespulse.settings import Settings

FIRING = {
    "alert": "lead_response_sla", "status": "firing", "lead_id": "0-1/901", "rep_id": "rep-7", "team": "emea",
    "source": "google_ads", "created_at": "2026-11-22T09:00:00+00:00", "deadline": "2026-11-22T09:05:00+00:00",
    "emitted_at": "2026-11-22T09:05:00.180000+00:00", "age_seconds": 300.18,
}


def link(alert: Any) -> str | None:
    return Config.model_validate(
        {"alerts": {"lead_url": "https://app.hubspot.com/contacts/123/record/0-1/{lead_id}"}}
    ).alerts.link(alert)


def test_an_sla_alert_has_the_issue_labels_the_deadline_as_start_and_a_crm_link() -> None:
    alert = am_alert(FIRING, link)
    assert alert["labels"] == {
        "alertname": "SalespulseLeadResponseSlaBreached", "severity": "critical", "team": "emea", "rep": "rep-7",
        "source": "google_ads", "lead_id": "0-1/901",
    }
    assert alert["startsAt"] == FIRING["deadline"] and "endsAt" not in alert
    assert alert["annotations"]["lead_url"] == "https://app.hubspot.com/contacts/123/record/0-1/0-1/901"
    assert alert["annotations"]["age"] == "5m 0s" and alert["annotations"]["deadline"] == FIRING["deadline"]


def test_a_resend_and_the_resolution_keep_the_label_set_so_alertmanager_keeps_one_alert() -> None:
    resend = am_alert({**FIRING, "emitted_at": "2026-11-22T09:09:00+00:00", "age_seconds": 540.0}, link)
    resolved = am_alert({**FIRING, "status": "resolved", "emitted_at": "2026-11-22T09:10:00+00:00"}, link)
    first = am_alert(FIRING, link)
    assert fingerprint(resend) == fingerprint(first) == fingerprint(resolved)
    assert resolved["endsAt"] == "2026-11-22T09:10:00+00:00"
    warning = am_alert({**FIRING, "alert": "lead_response_warning", "sla_deadline": FIRING["deadline"]}, link)
    assert warning["labels"]["alertname"] == "SalespulseLeadResponseSlaWarning"
    assert fingerprint(warning) != fingerprint(first)


def test_a_source_template_wins_over_the_default_link() -> None:
    alerts = Config.model_validate(
        {"alerts": {"lead_url": "https://crm/{lead_id}", "lead_url_by_source": {"web": "https://pd/lead/{lead_id}"}}}
    ).alerts
    assert alerts.link({**FIRING, "source": "web"}) == "https://pd/lead/0-1/901"
    assert alerts.link(FIRING) == "https://crm/0-1/901"
    assert Config().alerts.link(FIRING) is None


def test_alertmanager_urls_are_comma_separated_http_urls() -> None:
    settings = Settings(alertmanager_url="http://am1:9093/, http://am2:9093")
    assert settings.alertmanager_urls == ["http://am1:9093", "http://am2:9093"]
    with pytest.raises(ValueError, match="alertmanager_url|http"):
        Settings(alertmanager_url="am1:9093")
    assert parse_urls(None) == []


def test_a_full_queue_drops_its_oldest_alert_and_counts_it() -> None:
    registry = CollectorRegistry()
    sink = AlertmanagerSink(["http://127.0.0.1:1"], link, registry, max_queue=2)
    sink.put({**FIRING, "lead_id": f"L{i}"} for i in range(3))
    assert [dict(key)["lead_id"] for key in sink.targets[0].queue] == ["L1", "L2"]
    assert registry.get_sample_value("salespulse_alertmanager_alerts_dropped_total", {"url": "http://127.0.0.1:1"}) == 1
    sink.put([{**FIRING, "lead_id": "L2", "status": "resolved"}])  # the newest version replaces the queued one
    assert len(sink.targets[0].queue) == 2 and "endsAt" in sink.targets[0].queue[fingerprint(am_alert(
        {**FIRING, "lead_id": "L2"}, link))]


async def test_a_refused_post_stays_queued_with_backoff_and_goes_out_when_alertmanager_answers() -> None:
    received: list[list[dict[str, Any]]] = []
    status = {"code": 503}

    async def alerts(request: web.Request) -> web.Response:
        if status["code"] != 200:
            return web.Response(status=status["code"], text="down")
        received.append(await request.json())
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    registry = CollectorRegistry()
    sink = AlertmanagerSink([url], link, registry)
    target = sink.targets[0]
    try:
        async with aiohttp.ClientSession() as session:
            sink.put([FIRING])
            assert not await target.deliver_once(session)
            assert target.backoff == 0.5 and len(target.queue) == 1
            assert not await target.deliver_once(session)
            assert target.backoff == 1.0
            status["code"] = 200
            assert await target.deliver_once(session)
            assert target.backoff == 0 and not target.queue
        assert [a["labels"]["lead_id"] for a in received[0]] == ["0-1/901"]
        assert registry.get_sample_value("salespulse_alertmanager_alerts_failed_total", {"url": url}) == 2
        assert registry.get_sample_value("salespulse_alertmanager_alerts_sent_total", {"url": url}) == 1
        assert registry.get_sample_value("salespulse_alertmanager_alerts_queued", {"url": url}) == 0
    finally:
        await runner.cleanup()
