"""``deal_stalled`` end to end: a real worker, Tansu, Redis and Alertmanager (Debian's, started by the test).

A deal left in a stage past its ``stalled_after_days`` is notified once, grouped by team, and resolves
when it moves; a deal that moves in time never alerts; a worker SIGKILLed around the deadlines leaves
exactly one firing per stalled deal on ``salespulse.alerts`` and one alert per deal in Alertmanager.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.alertmanager import Alertmanager, Webhook
from tests.integration.stack import SalespulseProcess, metric_value, metrics_text, post_events, stack_env
from tests.integration.test_alertmanager import alertmanager, wait_until, webhook  # noqa: F401 (fixtures)
from tests.integration.test_lead_response import alerts_in_topic

pytestmark = pytest.mark.integration
STALLED = "SalespulseDealStalled"


def config(stall_s: float) -> str:
    return f"""
[pipelines.sales]
stages = ["discovery", "proposal"]
won_stages = ["won"]
[pipelines.sales.stalled_after_days]
discovery = {stall_s / 86400!r}
proposal = {stall_s / 86400!r}
[alerts]
resend_seconds = 2
"""


def deal(deal_id: str, team: str, stage: str = "discovery", n: int = 0, from_stage: str | None = None) -> dict:
    at = datetime.now(timezone.utc).isoformat()
    kind = "deal.created" if from_stage is None else "deal.stage_changed"
    event = {"event_id": f"{deal_id}-{n}", "type": kind, "occurred_at": at, "deal_id": deal_id,
             "rep_id": "rep-1", "team": team, "pipeline": "sales"}
    return {**event, "stage": stage} if from_stage is None else {**event, "from_stage": from_stage, "to_stage": stage}


def env_for(broker: EmbeddedBroker, redis_server: EmbeddedRedis, unique_id: str, tmp_path: Path, am: Alertmanager,
            stall_s: float) -> dict[str, str]:
    path = tmp_path / "salespulse.toml"
    path.write_text(config(stall_s))
    return stack_env(broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_ALERTMANAGER_URL=am.url,
                     SALESPULSE_CONFIG=str(path))


async def test_a_stalled_deal_is_notified_by_team_once_and_resolves_when_it_moves(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
    alertmanager: Alertmanager, webhook: Webhook,  # noqa: F811
) -> None:
    env = env_for(fresh_broker, redis_server, unique_id, tmp_path, alertmanager, stall_s=4)
    async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
        assert (await post_events(stack.url, [deal("D-a", "alpha"), deal("D-b", "beta"), deal("D-fast", "alpha")]))[0] == 202
        assert (await post_events(stack.url, [deal("D-fast", "alpha", "proposal", 1, "discovery")]))[0] == 202

        await webhook.wait_for(lambda _: {a["labels"]["deal_id"] for a in webhook.alerts(alertname=STALLED)} >= {"D-a", "D-b"})
        for note in webhook.notifications:
            assert set(note["groupLabels"]) == {"team"}
        found = webhook.alerts(alertname=STALLED, deal_id="D-a")[0]
        assert found["labels"] == {"alertname": STALLED, "severity": "warning", "team": "alpha", "rep": "rep-1",
                                   "source": "unknown", "deal_id": "D-a"}
        assert (await post_events(stack.url, [deal("D-a", "alpha", "won", 1, "discovery")]))[0] == 202
        await webhook.wait_for(lambda _: any(a["status"] == "resolved" for a in webhook.alerts(alertname=STALLED, deal_id="D-a")))

        # D-fast left discovery in time, but its proposal stage stalls too, 4 s after the move: its own alert.
        expected = [("D-a", "discovery", "firing"), ("D-a", "discovery", "resolved"),
                    ("D-b", "discovery", "firing"), ("D-fast", "proposal", "firing")]

        async def topic_settled() -> bool:
            alerts = await alerts_in_topic(fresh_broker.bootstrap, "deal_stalled")
            return sorted((a["deal_id"], a["stage"], a["status"]) for a in alerts) == expected

        await wait_until(topic_settled, what=f"exactly {expected} on salespulse.alerts")
        await asyncio.sleep(3)  # and nothing more
        assert await topic_settled()
        text = await metrics_text(stack.url)
        assert metric_value(text, "salespulse_alerts_published_total", status="firing", alert="deal_stalled",
                            team="alpha") == 2
        assert metric_value(text, "salespulse_alerts_published_total", status="resolved", alert="deal_stalled",
                            team="alpha") == 1


async def test_a_worker_killed_around_the_stall_deadlines_gives_one_alert_per_stalled_deal(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
    alertmanager: Alertmanager,  # noqa: F811
) -> None:
    stall_s = 6
    env = env_for(fresh_broker, redis_server, unique_id, tmp_path, alertmanager, stall_s=stall_s)
    first = SalespulseProcess("run", tmp_path / "run1.log", env)
    first.start()
    second = SalespulseProcess("run", tmp_path / "run2.log", env)
    try:
        await first.wait_ready()
        deals = [deal(f"D-{i}", "alpha" if i % 2 else "beta") for i in range(10)]
        assert (await post_events(first.url, deals))[0] == 202
        await asyncio.sleep(stall_s - 0.3)  # around their deadlines
        first.kill()
        second.start()
        await second.wait_ready()
        assert (await post_events(second.url, deals))[0] == 202  # the CRM retries too
        expected = sorted(d["deal_id"] for d in deals)

        async def all_in_am() -> bool:
            return sorted(a["labels"]["deal_id"] for a in await alertmanager.alerts(alertname=STALLED)) == expected

        await wait_until(all_in_am, timeout_s=40, what="every stalled deal in Alertmanager")
        await asyncio.sleep(4)  # two more resends
        assert sorted(a["labels"]["deal_id"] for a in await alertmanager.alerts(alertname=STALLED)) == expected
        firing = sorted(a["deal_id"] for a in await alerts_in_topic(fresh_broker.bootstrap, "deal_stalled")
                        if a["status"] == "firing")
        assert firing == expected, "exactly one firing per stalled deal on salespulse.alerts"
    finally:
        first.stop()
        second.stop()
