"""Per-lead alerts through a real Alertmanager (Debian's ``prometheus-alertmanager``), whose receiver is a
webhook server this test runs: the notification of a breached lead arrives grouped by team, resolves after
the touch, a silence suppresses it; a worker SIGKILLed around the deadlines while Alertmanager is down for
30 s still leaves exactly one alert per breached lead in Alertmanager. Never skipped (scripts/test.sh
installs Alertmanager)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.alertmanager import Alertmanager, Webhook, routing_config
from tests.integration.stack import SalespulseProcess, metric_value, metrics_text, post_events, stack_env
from tests.integration.test_lead_response import alerts_in_topic, lead, touch

pytestmark = pytest.mark.integration
SLA_ALERT = "SalespulseLeadResponseSlaBreached"
WARNING_ALERT = "SalespulseLeadResponseSlaWarning"
CONFIG = """
[alerts]
lead_url = "https://app.hubspot.com/contacts/123/record/0-1/{lead_id}"
resend_seconds = 2
"""


@pytest_asyncio.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    await hook.start()
    yield hook
    await hook.stop()


@pytest_asyncio.fixture
async def alertmanager(tmp_path: Path, webhook: Webhook) -> AsyncIterator[Alertmanager]:
    am = Alertmanager(tmp_path / "am", routing_config(webhook.url))
    await am.start()
    yield am
    am.stop()


def env_for(broker: EmbeddedBroker, redis_server: EmbeddedRedis, unique_id: str, tmp_path: Path, am: Alertmanager,
            sla_s: int) -> dict[str, str]:
    config = tmp_path / "salespulse.toml"
    config.write_text(CONFIG)
    return stack_env(
        broker.url, redis_server.url, f"t-{unique_id}",
        SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(sla_s), SALESPULSE_ALERTMANAGER_URL=am.url, SALESPULSE_CONFIG=str(config),
    )


async def wait_until(predicate, timeout_s: float = 30.0, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_breached_lead_is_notified_grouped_by_team_resolves_after_the_touch_and_a_silence_suppresses_it(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
    alertmanager: Alertmanager, webhook: Webhook,
) -> None:
    env = env_for(fresh_broker, redis_server, unique_id, tmp_path, alertmanager, sla_s=4)
    await alertmanager.silence({"team": "gamma"}, 600, comment="lunch break")
    async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
        leads = [lead("L-a1", team="alpha"), lead("L-a2", team="alpha", rep="rep-2"), lead("L-b1", team="beta"),
                 lead("L-g1", team="gamma"), lead("L-fast", team="alpha")]
        assert (await post_events(stack.url, leads))[0] == 202
        assert (await post_events(stack.url, touch("L-fast")))[0] == 202

        await webhook.wait_for(lambda _: {a["labels"]["lead_id"] for a in webhook.alerts(alertname=SLA_ALERT)}
                               >= {"L-a1", "L-a2", "L-b1"})
        for note in webhook.notifications:  # one group per team: every notification is one team's
            assert set(note["groupLabels"]) == {"team"}
            assert {a["labels"]["team"] for a in note["alerts"]} == {note["groupLabels"]["team"]}
        a1 = webhook.alerts(alertname=SLA_ALERT, lead_id="L-a1")[0]
        assert a1["labels"] == {"alertname": SLA_ALERT, "severity": "critical", "team": "alpha", "rep": "rep-1",
                                "source": "google_ads", "lead_id": "L-a1"}
        assert a1["annotations"]["lead_url"] == "https://app.hubspot.com/contacts/123/record/0-1/L-a1"
        assert a1["status"] == "firing"
        assert webhook.alerts(alertname=WARNING_ALERT, lead_id="L-a1"), "the pre-breach warning was notified too"
        assert not webhook.alerts(lead_id="L-fast")

        assert (await post_events(stack.url, touch("L-a1")))[0] == 202
        await webhook.wait_for(lambda _: any(a["status"] == "resolved"
                                             for a in webhook.alerts(alertname=SLA_ALERT, lead_id="L-a1")))
        assert all(a["status"] == "firing" for a in webhook.alerts(alertname=SLA_ALERT, lead_id="L-a2"))

        # The silenced team's alert is in Alertmanager, suppressed, and never notified.
        async def gamma_suppressed() -> bool:
            found = await alertmanager.alerts(alertname=SLA_ALERT, lead_id="L-g1")
            return bool(found) and found[0]["status"]["state"] == "suppressed"

        await wait_until(gamma_suppressed, what="L-g1 suppressed in Alertmanager")
        await asyncio.sleep(3)  # longer than group_wait + group_interval
        assert not webhook.alerts(team="gamma")
        text = await metrics_text(stack.url)
        assert metric_value(text, "salespulse_alertmanager_alerts_sent_total", url=alertmanager.url) >= 4
        assert metric_value(text, "salespulse_alerts_published_total", status="firing", alert="lead_response_sla",
                            team="alpha") == 2


async def test_a_worker_killed_around_the_deadlines_while_alertmanager_is_down_gives_one_alert_per_breached_lead(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
    alertmanager: Alertmanager, webhook: Webhook,
) -> None:
    sla_s = 6
    env = env_for(fresh_broker, redis_server, unique_id, tmp_path, alertmanager, sla_s=sla_s)
    first = SalespulseProcess("run", tmp_path / "run1.log", env)
    first.start()
    second = SalespulseProcess("run", tmp_path / "run2.log", env)
    try:
        await first.wait_ready()
        early = [lead(f"L-early-{i}", team="alpha") for i in range(4)]
        assert (await post_events(first.url, early))[0] == 202

        async def early_in_am() -> bool:
            return len(await alertmanager.alerts(alertname=SLA_ALERT)) >= 4

        await wait_until(early_in_am, what="the early leads in Alertmanager")
        waiting = [lead(f"L-wait-{i}", team="beta") for i in range(8)]
        assert (await post_events(first.url, waiting))[0] == 202
        await asyncio.sleep(sla_s - 0.3)  # around their deadlines
        first.kill()
        alertmanager.stop()  # down for 30 s: the new worker's posts fail and are retried
        stopped = time.monotonic()
        second.start()
        await second.wait_ready()
        assert (await post_events(second.url, early + waiting))[0] == 202  # the CRM retries too
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        await alertmanager.start()  # a restarted Alertmanager holds no alerts: the states send them again

        expected = sorted(x["lead_id"] for x in early + waiting)

        async def all_in_am() -> bool:
            return sorted(a["labels"]["lead_id"] for a in await alertmanager.alerts(alertname=SLA_ALERT)) == expected

        await wait_until(all_in_am, timeout_s=40, what="every breached lead in Alertmanager")
        await asyncio.sleep(4)  # two more resends
        found = await alertmanager.alerts(alertname=SLA_ALERT)
        assert sorted(a["labels"]["lead_id"] for a in found) == expected, "exactly one alert per breached lead"
        assert all(a["startsAt"].startswith(a["annotations"]["deadline"][:19]) for a in found)
        text = await metrics_text(second.url)
        assert metric_value(text, "salespulse_alertmanager_alerts_failed_total", url=alertmanager.url) >= 1
        firing = sorted(a["lead_id"] for a in await alerts_in_topic(fresh_broker.bootstrap) if a["status"] == "firing")
        assert firing == expected, "and one firing per lead on salespulse.alerts"
    finally:
        first.stop()
        second.stop()
