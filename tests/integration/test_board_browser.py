"""The live board of ``salespulse run`` in a real browser (Debian's chromium, headless, via Playwright).

It loads, shows what Redis holds (compared key by key), keeps the configured stage order and rep
names, and updates within 2 s of a posted event. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page, TimeoutError as PlaywrightTimeout, expect

from tests.integration.board_data import CONFIG, STAGE_ORDER, call, lead, seed_events
from tests.integration.browser import ARTIFACTS, chromium
from tests.integration.stack import SalespulseProcess, post_events

pytestmark = pytest.mark.integration

UPDATE_BUDGET_S = 2.0


def _redis_url(process: SalespulseProcess) -> str:
    found = re.search(r"redis +(redis://\S+) \(embedded\)", process.log_path.read_text(errors="replace"))
    assert found, process.log_tail()
    return found.group(1)


async def _hash(client: aioredis.Redis, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in (await client.hgetall(key)).items()}


async def _wait_until(page: Page, script: str, arg: object = None, timeout_ms: float = 20000) -> None:
    try:
        await page.wait_for_function(script, arg=arg, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(f"the board never showed it; it shows:\n{await page.inner_text('main')}") from None


async def test_the_live_board_shows_what_redis_holds_and_updates_within_two_seconds(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env |= {"SALESPULSE_DATA_DIR": str(tmp_path / "data"), "SALESPULSE_CONFIG": str(config)}
    process = SalespulseProcess("run", tmp_path / "run.log", env)
    errors: list[str] = []
    async with process, chromium() as browser:
        redis_client = aioredis.Redis.from_url(_redis_url(process))
        try:
            status, body = await post_events(process.url, seed_events("b1"))
            assert status == 202, body
            page = await browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(process.url + "/")
            await expect(page.locator("#status")).to_have_text("live", timeout=20000)
            # Everything of the first batch has reached Redis and the page: both waiting leads, the alert.
            await _wait_until(page, """() =>
                document.querySelectorAll('#waiting-rows tr[data-lead-id]').length === 2
                && document.querySelector('#alert-rows li[data-lead-id="b1-lead-late"]') !== null
                && document.querySelectorAll('#activity-rows tr[data-rep-id]').length === 3
                && document.querySelector('#stl-within').textContent !== '–'""")

            today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
            month = today[:7]
            # Activity per rep: the page's totals are the Redis day hashes', names from the config.
            for rep, name in (("rep-001", "Ana Silva"), ("rep-002", "Ben Okafor")):
                fields = await _hash(redis_client, f"salespulse:activity:rep:{rep}:day:{today}")
                row = page.locator(f'#activity-rows tr[data-rep-id="{rep}"]')
                await expect(row.locator("td").nth(0)).to_have_text(name)
                await expect(row.locator("td").nth(1)).to_have_text(str(int(fields["total"])))
                await expect(row).to_contain_text(f"call {int(fields.get('call', 0))}/{int(fields['target:call'])}")
            # Leads waiting now: exactly the leads of the awaiting keys, oldest first.
            awaiting = []
            for key in await redis_client.keys("salespulse:lead_response:awaiting:p*"):
                awaiting += orjson.loads(await redis_client.get(key))["leads"]
            awaiting.sort(key=lambda entry: entry["created_at"])
            shown = await page.locator("#waiting-rows tr[data-lead-id]").evaluate_all(
                "rows => rows.map(row => row.dataset.leadId)")
            assert shown == [entry["lead_id"] for entry in awaiting] == ["b1-lead-late", "b1-lead-wait"]
            assert "late" in (await page.locator('tr[data-lead-id="b1-lead-late"]').get_attribute("class") or "")
            await expect(page.locator('tr[data-lead-id="b1-lead-late"] td').nth(1)).to_have_text("Ben Okafor")
            # The alert feed is the recent-alerts set.
            recent = [orjson.loads(v) for v in await redis_client.zrevrange("salespulse:alerts:recent", 0, -1)]
            feed = await page.locator("#alert-rows li[data-lead-id]").evaluate_all("items => items.map(i => i.dataset.leadId)")
            assert feed == [alert["lead_id"] for alert in recent] == ["b1-lead-late"]
            # Today's alerts per rule and team: the counts hash, written with each status's first publication.
            counts = {k.decode(): int(v) for k, v in (await redis_client.hgetall(f"salespulse:alerts:counts:{today}")).items()}
            assert counts == {"lead_response_sla:firing:team-north": 1}
            count_row = page.locator('#alert-count-rows tr[data-alert="lead_response_sla"][data-team="team-north"]')
            await expect(count_row.locator("td.fired")).to_have_text("1")
            await expect(count_row.locator("td.resolved")).to_have_text("0")
            # Speed to lead today: within-SLA over leads *created*, summed over the teams' day hashes.
            # Each team's hash goes out in its own flush: wait until both hold the batch's four leads.
            until = time.monotonic() + 10
            while True:
                teams = [await _hash(redis_client, f"salespulse:lead_response:team:{team}:day:{today}")
                         for team in ("team-north", "team-south")]
                created = sum(t.get("created", 0) for t in teams)
                within = sum(t.get("within_sla", 0) for t in teams)
                if (created, within) == (4, 1) or time.monotonic() > until:
                    break
                await asyncio.sleep(0.2)
            assert (created, within) == (4, 1)
            await expect(page.locator("#stl-within")).to_have_text(f"{round(100 * within / created)}%")
            await expect(page.locator("#stl-within-label")).to_contain_text(f"{int(within)} of {int(created)} leads")
            await expect(page.locator("#stl-awaiting")).to_have_text("2")
            # The funnel in the configured stage order (not alphabetical), entries from the month hash.
            stages = await page.locator("#funnel-body .stage").evaluate_all("rows => rows.map(r => r.dataset.stage)")
            assert stages == STAGE_ORDER
            entries = await _hash(redis_client, f"salespulse:pipeline:pipeline:default:month:{month}")
            for stage in STAGE_ORDER:
                cell = page.locator(f'#funnel-body .stage[data-stage="{stage}"] .num').first
                await expect(cell).to_have_text(str(int(entries.get(f"entries:{stage}", 0))))
            # Forecast against quota, in the config's currency.
            open_now = await _hash(redis_client, "salespulse:pipeline:open:pipeline:default")
            assert open_now["weighted:EUR"] == 41000
            await expect(page.locator("#fc-weighted")).to_have_text(re.compile(r"€\s?41,000|41,000\s?€"))
            await expect(page.locator("#fc-quota")).to_have_text(re.compile("€"))

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "board-laptop.png"), full_page=True)

            # Live: a posted event shows within 2 s (a new waiting lead, and rep-002's next call).
            calls_before = int((await _hash(redis_client, f"salespulse:activity:rep:rep-002:day:{today}"))["total"])
            started = time.monotonic()
            status, body = await post_events(process.url, [
                lead("b2-l1", "b2-lead-new", "rep-002", "team-north", age_s=5),
                call("b2-c1", "b1-lead-x", "rep-002", "team-north"),
            ])
            assert status == 202, body
            await _wait_until(page, """([lead, total]) =>
                document.querySelector(`#waiting-rows tr[data-lead-id="${lead}"]`) !== null
                && document.querySelector('#activity-rows tr[data-rep-id="rep-002"] td:nth-child(2)').textContent === total""",
                arg=["b2-lead-new", str(calls_before + 1)], timeout_ms=10000)
            elapsed = time.monotonic() - started
            assert elapsed <= UPDATE_BUDGET_S, f"the board took {elapsed:.2f} s to show a posted event"
            await expect(page.locator("#waiting-count")).to_have_text("3")

            print(f"posted event shown by the board after {elapsed:.2f} s")
            wall = await browser.new_page()
            await wall.set_viewport_size({"width": 1920, "height": 1080})
            await wall.goto(process.url + "/?wall")
            await expect(wall.locator("#status")).to_have_text("live", timeout=20000)
            assert await wall.evaluate("document.documentElement.classList.contains('wall')")
            big = await wall.locator("#stl-within").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            small = await page.locator("#stl-within").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            assert big > small * 1.4, (big, small)
            await wall.screenshot(path=str(ARTIFACTS / "board-wall.png"), full_page=True)
            narrow = await browser.new_page()
            await narrow.set_viewport_size({"width": 390, "height": 844})
            await narrow.goto(process.url + "/")
            await expect(narrow.locator("#status")).to_have_text("live", timeout=20000)
            overflow = await narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone-sized screen"
        finally:
            await redis_client.aclose()
    assert not errors, errors
