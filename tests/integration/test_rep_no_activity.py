"""``rep_no_activity`` end to end: a real worker, Tansu and Redis. A rep of ``[teams]`` with no outbound
activity by the configured local time is alerted once on ``salespulse.alerts`` and resolves at the rep's
first call, made on a lead of another partition; a rep who called before the deadline is never alerted."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.embedded.redis_server import EmbeddedRedis
from tests.integration.stack import SalespulseProcess, metric_value, metrics_text, post_events, stack_env
from tests.integration.test_alertmanager import wait_until
from tests.integration.test_lead_response import alerts_in_topic, touch

pytestmark = pytest.mark.integration


def next_minute(margin_s: float = 20.0) -> datetime:
    """The next whole minute (UTC) at least ``margin_s`` away: the deadline's granularity is a minute."""
    now = datetime.now(timezone.utc)
    at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return at if (at - now).total_seconds() >= margin_s else at + timedelta(minutes=1)


async def test_an_idle_rep_is_alerted_once_at_the_deadline_and_resolved_by_the_first_call(
    fresh_broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path, unique_id: str,
) -> None:
    by = next_minute()
    config = tmp_path / "salespulse.toml"
    config.write_text(f'[teams]\nrep-idle = "alpha"\nrep-busy = "alpha"\n'
                      f'[alerts.rep_no_activity]\nby = "{by:%H:%M}"\n')
    env = stack_env(fresh_broker.url, redis_server.url, f"t-{unique_id}", SALESPULSE_CONFIG=str(config),
                    SALESPULSE_TIMEZONE="UTC")  # no business hours configured: around the clock, in UTC
    async with SalespulseProcess("run", tmp_path / "run.log", env) as stack:
        assert (await post_events(stack.url, [touch("L-busy-1", rep="rep-busy")]))[0] == 202

        async def fired() -> bool:
            return any(a["status"] == "firing" for a in await alerts_in_topic(fresh_broker.bootstrap, "rep_no_activity"))

        await wait_until(fired, timeout_s=(by - datetime.now(timezone.utc)).total_seconds() + 20, what="the idle rep's alert")
        assert time.time() >= by.timestamp()
        # The idle rep's first call, on leads of other partitions than the rep's own: one resolution.
        calls = [touch(f"L-idle-{i}", rep="rep-idle", n=i) for i in range(4)]
        assert (await post_events(stack.url, calls))[0] == 202
        expected = [("rep-idle", "firing"), ("rep-idle", "resolved")]

        async def settled() -> bool:
            alerts = await alerts_in_topic(fresh_broker.bootstrap, "rep_no_activity")
            return sorted((a["rep_id"], a["status"]) for a in alerts) == expected

        await wait_until(settled, what=f"exactly {expected} on salespulse.alerts")
        await asyncio.sleep(3)
        assert await settled()
        firing = next(a for a in await alerts_in_topic(fresh_broker.bootstrap, "rep_no_activity") if a["status"] == "firing")
        assert firing["team"] == "alpha" and firing["deadline"] == by.isoformat()
        text = await metrics_text(stack.url)
        assert metric_value(text, "salespulse_alerts_published_total", status="firing", alert="rep_no_activity",
                            team="alpha") == 1
