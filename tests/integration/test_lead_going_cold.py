"""``lead_going_cold`` end to end: a real worker, Tansu, Redis and Alertmanager (Debian's, started by the test).

A lead touched once is notified when its follow-up window passes, and resolves at the next touch; a lead
followed up in time never alerts; a team without the rule never alerts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.alertmanager import Alertmanager, Webhook
from tests.integration.stack import SalespulseProcess, metric_value, metrics_text, post_events, stack_env
from tests.integration.test_alertmanager import alertmanager, wait_until, webhook  # noqa: F401 (fixtures)
from tests.integration.test_lead_response import alerts_in_topic, touch

pytestmark = pytest.mark.integration
COLD = "SalespulseLeadGoingCold"
CONFIG = f"""
[alerts]
resend_seconds = 2
[alerts.lead_going_cold]
teams = {{ alpha = {4 / 86400!r} }}
"""


def call(lead_id: str, team: str, n: int) -> dict:
    return {**touch(lead_id, n=n), "team": team}


async def test_a_lead_touched_once_goes_cold_once_and_resolves_at_the_next_touch(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
    alertmanager: Alertmanager, webhook: Webhook,  # noqa: F811
) -> None:
    config = tmp_path / "salespulse.toml"
    config.write_text(CONFIG)
    env = stack_env(fresh_broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_ALERTMANAGER_URL=alertmanager.url,
                    SALESPULSE_CONFIG=str(config))
    async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
        first = [call("L-cold", "alpha", 0), call("L-warm", "alpha", 0), call("L-other", "beta", 0)]
        assert (await post_events(stack.url, first))[0] == 202
        assert (await post_events(stack.url, [call("L-warm", "alpha", 1)]))[0] == 202

        await webhook.wait_for(lambda _: bool(webhook.alerts(alertname=COLD, lead_id="L-cold")))
        found = webhook.alerts(alertname=COLD, lead_id="L-cold")[0]
        assert found["labels"]["team"] == "alpha" and found["labels"]["severity"] == "warning"
        assert (await post_events(stack.url, [call("L-cold", "alpha", 1)]))[0] == 202
        await webhook.wait_for(lambda _: any(a["status"] == "resolved" for a in webhook.alerts(alertname=COLD, lead_id="L-cold")))

        expected = [("L-cold", "firing"), ("L-cold", "resolved")]

        async def settled() -> bool:
            alerts = await alerts_in_topic(fresh_broker.bootstrap, "lead_going_cold")
            return sorted((a["lead_id"], a["status"]) for a in alerts) == expected

        await wait_until(settled, what=f"exactly {expected} on salespulse.alerts")
        await asyncio.sleep(5)  # longer than the window: nothing for L-warm (followed up) or L-other (beta has no rule)
        assert await settled()
        text = await metrics_text(stack.url)
        assert metric_value(text, "salespulse_alerts_published_total", status="firing", alert="lead_going_cold",
                            team="alpha") == 1
