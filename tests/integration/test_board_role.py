"""``salespulse board``: the live board over a production Redis, as its own process.

Redis is given the keys the workers publish (docs/outputs.md); the board must read them into its
snapshot (team sums, stage order, rep names, currency) and push a new snapshot on its event stream
when a change is announced on ``salespulse:updates``; SIGTERM stops it even with a viewer connected.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from salespulse.embedded.redis_server import EmbeddedRedis
from tests.integration.board_data import CONFIG, STAGE_ORDER
from tests.integration.stack import SalespulseProcess

pytestmark = pytest.mark.integration


async def _next_snapshot(response: aiohttp.ClientResponse, timeout_s: float = 5.0) -> dict:
    """The data of the next ``snapshot`` event of a server-sent event stream."""
    event, data = None, b""
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await response.content.readline()).rstrip(b"\n")
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data += line[6:]
            elif not line and data:
                if event == "snapshot":
                    return orjson.loads(data)
                event, data = None, b""


async def test_board_role_reads_redis_and_streams_each_announced_change(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    month = today[:7]
    await redis_client.hset(f"salespulse:lead_response:team:north:day:{today}",
                            mapping={"created": 3, "touched": 2, "within_sla": 2, "le_60": 1, "le_120": 1})
    await redis_client.hset(f"salespulse:lead_response:team:south:day:{today}",
                            mapping={"created": 1, "touched": 1, "late": 1, "le_900": 1})
    await redis_client.hset(f"salespulse:lead_response:team:north:day:{today}#partials", "0", "ignored")
    await redis_client.hset("salespulse:pipeline:open:pipeline:default",
                            mapping={"deals": 2, "deals:proposal": 1, "deals:discovery": 1, "amount:EUR": 30000,
                                     "weighted:EUR": 12500, "deals:zeta_custom": 0})
    await redis_client.hset(f"salespulse:pipeline:pipeline:default:month:{month}",
                            mapping={"entries:qualification": 5, "entries:discovery": 3, "entries:proposal": 2})
    await redis_client.hset(f"salespulse:pipeline:rep:rep-001:month:{month}",
                            mapping={"won_amount:EUR": 20000, "quota:EUR": 80000})
    await redis_client.hset(f"salespulse:activity:rep:rep-001:day:{today}",
                            mapping={"call": 4, "total": 6, "target:call": 10})
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    process = SalespulseProcess("board", tmp_path / "board.log", env,
                                args=["--redis-url", redis_server.url, "--config", str(config)])
    async with process, aiohttp.ClientSession() as session:
        async with session.get(f"{process.url}/api/board") as response:
            board = await response.json()
        speed = board["speed_to_lead"]
        assert (speed["created"], speed["touched"], speed["within_sla"]) == (4, 3, 2)
        assert speed["within_sla_rate"] == 0.5  # over leads created, not touched
        assert speed["p50_s"] == pytest.approx(90.0)  # (60, 120] bucket, interpolated like the merge script
        assert board["currency"] == "EUR"
        stages = [row["stage"] for row in board["funnel"][0]["stages"]]
        assert stages == [*STAGE_ORDER, "zeta_custom"]  # configured order, then unknown stages
        assert [row["entries"] for row in board["funnel"][0]["stages"]][:3] == [5, 3, 2]
        assert board["forecast"] == {"open_amount": 30000.0, "weighted": 12500.0, "open_deals": 2, "won": 20000.0,
                                     "quota": 80000.0, "attainment": 0.25}
        assert board["activity"] == [
            {"rep_id": "rep-001", "rep_name": "Ana Silva", "team": "team-north", "total": 6,
             "targets": [{"kind": "call", "count": 4, "target": 10}]},
            # reps of the config with a target and nothing done today: on the board at 0
            {"rep_id": "rep-002", "rep_name": "Ben Okafor", "team": "team-north", "total": 0,
             "targets": [{"kind": "call", "count": 0, "target": 10}, {"kind": "email_sent", "count": 0, "target": 5}]},
            {"rep_id": "rep-003", "rep_name": "rep-003", "team": "team-south", "total": 0,
             "targets": [{"kind": "call", "count": 0, "target": 10}, {"kind": "email_sent", "count": 0, "target": 5}]},
        ]
        async with session.get(f"{process.url}/") as response:
            assert response.status == 200 and "salespulse live board" in await response.text()
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        async with session.get(f"{process.url}/board/static/snapshot.py") as response:
            assert response.status == 404

        async with session.get(f"{process.url}/board/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await _next_snapshot(stream)
            assert first["activity"][0]["total"] == 6
            await redis_client.hset(f"salespulse:activity:rep:rep-001:day:{today}", mapping={"call": 5, "total": 7})
            # A key the board has not seen yet (its key lists are rescanned every 30 s): it comes with its announcement.
            await redis_client.hset(f"salespulse:activity:rep:rep-002:day:{today}", mapping={"call": 1, "total": 1})
            await redis_client.publish("salespulse:updates", orjson.dumps(
                {"family": "activity", "updates": [
                    {"key": f"salespulse:activity:rep:rep-001:day:{today}", "values": {"call": 5, "total": 7}},
                    {"key": f"salespulse:activity:rep:rep-002:day:{today}", "values": {"call": 1, "total": 1}}]}))
            started = time.monotonic()
            second = await _next_snapshot(stream)
            assert [(row["rep_name"], row["total"]) for row in second["activity"]] == [
                ("Ana Silva", 7), ("Ben Okafor", 1), ("rep-003", 0)]
            assert time.monotonic() - started < 2.0
            assert process.stop(timeout_s=10) == 0, process.log_tail()  # a connected viewer does not hold it up
