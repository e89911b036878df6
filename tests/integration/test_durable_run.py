"""``salespulse run`` survives a stop and a start: the same numbers, and SLA clocks that keep running.

The run's own embedded broker (memory-only Tansu) and Redis, with SALESPULSE_DATA_DIR in tmp_path; each
test stops the run (SIGTERM, or SIGKILL with a torn journal record), starts it again on the same data
directory and compares Redis, /metrics and the SLA alerts on ``salespulse.alerts`` and Redis.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from salespulse.embedded.durable import reset_watermarks
from salespulse.embedded.journal import read_journal, segments
from salespulse.embedded.redis_server import EmbeddedRedis
from salespulse.topics import ALERTS_TOPIC
from tests.integration.stack import SalespulseProcess, call, email, metrics_text, now_iso, post_events, read_topic

pytestmark = pytest.mark.integration
SLA_S = 30
#: Business series of /metrics that must read the same after a restart (health counters start again;
#: SLA breaches grow with the clock as waiting leads pass their deadlines).
COMPARED = (
    "salespulse_activities_total",
    "salespulse_leads_created_total",
    "salespulse_lead_response_seconds_count",
    "salespulse_lead_response_seconds_sum",
    "salespulse_leads_awaiting_response",
)


def lead(lead_id: str, created_offset_s: float = 0.0) -> dict:
    return {"event_id": f"created-{lead_id}", "type": "lead.created", "occurred_at": now_iso(created_offset_s),
            "lead_id": lead_id, "rep_id": "rep-1", "team": "emea", "source": "webinar"}


def touch(lead_id: str) -> dict:
    return {"event_id": f"touch-{lead_id}", "type": "call.logged", "occurred_at": now_iso(), "lead_id": lead_id,
            "rep_id": "rep-1", "team": "emea", "outcome": "no_answer"}


class DurableRun:
    """``salespulse run`` on one data directory, started again and again on the same HTTP port."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.starts = 0
        self.port: int | None = None
        self.process: SalespulseProcess | None = None

    async def start(self) -> SalespulseProcess:
        self.starts += 1
        env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
        env |= {"SALESPULSE_DATA_DIR": str(self.data_dir), "SALESPULSE_LEAD_RESPONSE_SLA_SECONDS": str(SLA_S)}
        process = SalespulseProcess("run", self.tmp_path / f"run{self.starts}.log", env)
        if self.port is not None:
            process.port = self.port
            process.env["SALESPULSE_HTTP_PORT"] = str(self.port)
        self.port = process.port
        process.start()
        await process.wait_ready(timeout_s=90)
        self.process = process
        return process

    def announced(self, pattern: str) -> str:
        assert self.process is not None
        found = re.search(pattern, self.process.log_path.read_text())
        assert found, self.process.log_tail()
        return found.group(1)

    @property
    def bootstrap(self) -> str:
        return self.announced(r"kafka\s+kafka://(\S+)")

    def redis(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.announced(r"redis\s+(redis://\S+)"))


async def redis_numbers(client: aioredis.Redis) -> dict[str, dict[bytes, bytes]]:
    """Every metric hash in Redis; of per-partition partials the fields, not the watermark (the offset
    that wrote them, which a restart changes). The alert guards and the alert counts (new alerts fire after
    the restart) are checked on their own."""
    found = {}
    async for key in client.scan_iter(match="salespulse:*"):
        name = key.decode()
        if name.startswith(("salespulse:alert:", "salespulse:alerts:counts:")) or await client.type(key) != b"hash":
            continue
        fields = await client.hgetall(key)
        if name.endswith("#partials"):
            fields = {k: v.split(b" ", 1)[-1] if k.isdigit() else v for k, v in fields.items()}
        found[name] = fields
    return found


async def metric_numbers(url: str) -> dict[str, float]:
    text = await metrics_text(url)
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(COMPARED)
    }


async def settled(run: DurableRun, expect_activities: float) -> tuple[dict, dict]:
    """Redis and /metrics numbers once every posted activity is counted and published (two equal reads)."""
    assert run.process is not None
    client = run.redis()
    previous = None
    deadline = time.monotonic() + 60  # generous: other test runs may share the machine
    try:
        while time.monotonic() < deadline:
            metrics = await metric_numbers(run.process.url)
            numbers = (await redis_numbers(client), metrics)
            counted = sum(v for k, v in metrics.items() if k.startswith("salespulse_activities_total"))
            if counted == expect_activities and numbers == previous:
                return numbers
            previous = numbers
            await asyncio.sleep(1.0)
    finally:
        await client.aclose()
    raise AssertionError(f"numbers did not settle at {expect_activities} activities: {previous}")


def assert_same(after: tuple[dict, dict], before: tuple[dict, dict]) -> None:
    for name, now, then in (("redis", after[0], before[0]), ("/metrics", after[1], before[1])):
        differing = {k: (then.get(k), now.get(k)) for k in set(now) | set(then) if now.get(k) != then.get(k)}
        assert not differing, f"{name} differs (before, after): {differing}"


async def alerts(bootstrap: str) -> list[dict]:
    """The SLA alerts on the topic (the pre-breach warnings beside them are another rule)."""
    found = [orjson.loads(value) for _, value in await read_topic(bootstrap, ALERTS_TOPIC, idle_s=0.8)]
    return [alert for alert in found if alert["alert"] == "lead_response_sla"]


async def sla_guards(client: aioredis.Redis, lead_id: str) -> set[bytes]:
    """The SLA statuses a lead's Redis guard records (other rules' fields are ``<rule>:<status>``)."""
    return {field for field in await client.hkeys(f"salespulse:alert:{lead_id}") if b":" not in field}


async def wait_for_alert(bootstrap: str, lead_id: str, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await alerts(bootstrap)
        if any(a["lead_id"] == lead_id for a in found):
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"no alert for {lead_id} within {timeout_s} s")


async def fill_and_stop(run: DurableRun, kill: bool) -> tuple[tuple[dict, dict], float]:
    """Post activities, a touched lead, a lead that alerts now and one waiting; stop; returns numbers, its post time."""
    process = await run.start()
    team = {"rep-0": "amer", "rep-1": "emea", "rep-2": "emea"}
    activities = [call(f"c{i}", f"rep-{i % 3}", team[f"rep-{i % 3}"]) for i in range(12)]
    activities += [email(f"e{i}", "rep-1", "emea") for i in range(6)]
    assert (await post_events(process.url, activities[:10]))[0] == 202
    assert (await post_events(process.url, activities[5:]))[0] == 202  # five resent: counted once
    assert (await post_events(process.url, [lead("L-done"), touch("L-done")]))[0] == 202
    assert (await post_events(process.url, lead("L-late", created_offset_s=2 - SLA_S)))[0] == 202
    before = await wait_for_alert(run.bootstrap, "L-late", timeout_s=20)
    assert [(a["lead_id"], a["status"]) for a in before] == [("L-late", "firing")]
    assert (await post_events(process.url, lead("L-wait")))[0] == 202
    waiting_since = time.time()
    # Due while the run is stopped (or catching up): fires once it is back.
    assert (await post_events(process.url, lead("L-down", created_offset_s=10 - SLA_S)))[0] == 202
    numbers = await settled(run, expect_activities=19)  # 18 activities and the touch of L-done
    assert process.proc is not None
    if kill:
        process.kill()
    else:
        assert process.stop() == 0, process.log_tail()
    return numbers, waiting_since


async def check_after_restart(run: DurableRun, numbers: tuple[dict, dict], waiting_since: float) -> None:
    """The same numbers; L-late not alerted again; L-wait alerts once, at its deadline, on both sinks."""
    process = await run.start()
    assert "re-seeded" in process.log_path.read_text(), process.log_tail()
    client = run.redis()
    pubsub = client.pubsub()
    await pubsub.subscribe("salespulse:alerts")
    try:
        assert_same(await settled(run, expect_activities=19), numbers)
        found = await wait_for_alert(run.bootstrap, "L-wait", timeout_s=waiting_since + SLA_S + 15 - time.time())
        expected = [("L-down", "firing"), ("L-late", "firing"), ("L-wait", "firing")]
        assert sorted((a["lead_id"], a["status"]) for a in found) == expected
        fired = next(a for a in found if a["lead_id"] == "L-wait")
        assert SLA_S <= fired["age_seconds"] < SLA_S + 3, fired  # at the deadline, the clock ran on
        received = []
        until = time.monotonic() + 3
        while time.monotonic() < until:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                if (alert := orjson.loads(message["data"]))["alert"] == "lead_response_sla":
                    received.append(alert)
        assert ("L-wait", "firing") in [(m["lead_id"], m["status"]) for m in received]
        assert ("L-late", "firing") not in [(m["lead_id"], m["status"]) for m in received]
        assert await sla_guards(client, "L-late") == {b"firing"}
        await asyncio.sleep(2)
        assert len(await alerts(run.bootstrap)) == 3  # and nothing more

        # L-late's alert state came back too: its first touch now resolves it, with no second firing.
        assert (await post_events(process.url, touch("L-late")))[0] == 202
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(found := await alerts(run.bootstrap)) < 4:
            await asyncio.sleep(0.3)
        late = [a["status"] for a in found if a["lead_id"] == "L-late"]
        assert late == ["firing", "resolved"], found
        assert await sla_guards(client, "L-late") == {b"firing", b"resolved"}
        # Each status counted once on the board, across the restart: the counts are the topic's.
        counted: dict[str, int] = {}
        async for key in client.scan_iter(match="salespulse:alerts:counts:*"):
            for field, value in (await client.hgetall(key)).items():
                rule, status, _ = field.decode().split(":", 2)
                if rule == "lead_response_sla":
                    counted[status] = counted.get(status, 0) + int(value)
        assert counted == {"firing": 3, "resolved": 1}, counted

        # The state itself came back (not only Redis): a new event counts on top of the old numbers.
        assert (await post_events(process.url, call("after", "rep-9", "emea")))[0] == 202
        _, metrics = await settled(run, expect_activities=21)
        activity = {k: v for k, v in metrics.items() if k.startswith("salespulse_activities_total")}
        expected = {k: v for k, v in numbers[1].items() if k.startswith("salespulse_activities_total")}
        expected['salespulse_activities_total{kind="call",outcome="no_answer",rep="rep-1",team="emea"}'] += 1  # L-late
        expected['salespulse_activities_total{kind="call",outcome="connected",rep="rep-9",team="emea"}'] = 1.0
        assert activity == expected
    finally:
        await pubsub.aclose()
        await client.aclose()
        process.stop()


async def test_a_stopped_run_starts_with_the_same_numbers_and_its_sla_clocks_running(tmp_path: Path) -> None:
    run = DurableRun(tmp_path)
    numbers, waiting_since = await fill_and_stop(run, kill=False)
    await check_after_restart(run, numbers, waiting_since)


async def test_a_killed_run_with_a_torn_journal_record_loses_nothing_it_accepted(tmp_path: Path) -> None:
    run = DurableRun(tmp_path)
    numbers, waiting_since = await fill_and_stop(run, kill=True)
    journal_dir = run.data_dir / "journal"
    accepted = list(read_journal(journal_dir))
    with segments(journal_dir)[-1].open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00\xde\xad")  # SIGKILL half-way through an append: a length, no payload
    await check_after_restart(run, numbers, waiting_since)
    # The torn bytes were cut off before appending: the event accepted after the restart is readable.
    assert [r.value for r in read_journal(journal_dir)][: len(accepted)] == [r.value for r in accepted]
    assert b'"after"' in list(read_journal(journal_dir))[-1].value


async def test_a_durable_start_lets_the_rebuilt_state_overwrite_every_stored_partial(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    key = "salespulse:activity:rep:rep-1:all#partials"
    await redis_client.hset(key, mapping={"0": '9 {"call":2}', "3": '12 {"call":1}', "5": '4 {"call":7}', "_group": "g"})
    assert await reset_watermarks(redis_server.url, partitions=4) == 3
    assert await redis_client.hgetall(key) == {b"0": b'-1 {"call":2}', b"3": b'-1 {"call":1}', b"_group": b"g"}
