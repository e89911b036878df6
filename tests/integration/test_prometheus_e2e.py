"""End to end with a real Prometheus: ``salespulse run --simulate`` scraped by the Debian ``prometheus`` server.

Prometheus loads the repository's ``prometheus/alerts.yml`` and scrapes every second. Every panel of the
Grafana dashboard is one test case (its title in the id): each of its queries, with the template variables
resolved through Prometheus like Grafana does, must return data. A lead posted with nobody touching it
must bring ``SalespulseLeadAwaitingTooLong`` to firing in Prometheus (SLA of 5 s via the environment).

Never skipped: without the ``prometheus`` binary these tests fail (``scripts/test.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from salespulse.embedded.ports import free_port
from tests.integration import dashboard as board
from tests.integration.stack import SalespulseProcess, now_iso, post_events

pytestmark = pytest.mark.integration

RULES = board.ROOT / "prometheus" / "alerts.yml"
SLA_S = 5
UNTOUCHED_TEAM = "team-e2e-untouched"
SCRAPE_S = 1
SPEEDUP = 3000
LEADS_PER_MINUTE = 600
#: What the test substitutes for Grafana's global variables: the dashboard range is the last minute.
RANGE_S = 60
GLOBALS = {"__range": f"{RANGE_S}s", "__rate_interval": f"{4 * SCRAPE_S + 1}s", "__interval": "2s"}
#: Custom variables the test sets instead of their default: a rolling window the short history covers.
OVERRIDES = {"window": "30s"}
#: A range far longer than the Prometheus history of the test (the retention trap).
LONG_RANGE = "6h"
#: The config of the run: display names and teams of some simulated reps, daily targets (built-in pipeline).
CONFIG = """
[teams]
rep-001 = "team-emea"
rep-002 = "team-amer"

[rep_names]
rep-001 = "Ana Silva"
rep-002 = "Ben Okafor"

[targets.default]
day = { call = 40, email_sent = 30 }
"""
#: The built-in pipeline's stage order (salespulse/metrics/pipeline.py), which the simulator drives.
DEFAULT_STAGE_ORDER = ["qualification", "discovery", "proposal", "negotiation", "closed_won", "closed_lost"]

DASHBOARD = board.load()
PANELS = board.panels(DASHBOARD)


class Prometheus:
    """A ``prometheus`` server process on a free loopback port with its own config and data folder."""

    def __init__(self, workdir: Path, scrape_target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "the prometheus server is not on PATH: run the suite with scripts/test.sh, which installs "
                "Debian's 'prometheus' package, or install it yourself (apt-get install prometheus)."
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "salespulse", "metrics_path": "/metrics", "static_configs": [{"targets": [scrape_target]}]}
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    async def api(self, session: aiohttp.ClientSession, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises with Prometheus's error."""
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"prometheus exited:\n{self.log_tail()}"
            try:
                async with session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s} s:\n{self.log_tail()}")


class QueryError(Exception):
    """Prometheus refused a query (syntax, execution)."""


@dataclass
class Board:
    """What the panel cases share: the running stack, Prometheus, and the resolved template variables."""

    prometheus: Prometheus
    salespulse: SalespulseProcess
    session: aiohttp.ClientSession
    values: dict[str, str] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # variable -> why it has no value


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-e2e")


@pytest_asyncio.fixture(scope="module")
async def stack(workdir: Path) -> AsyncIterator[Board]:
    """``salespulse run --simulate`` (embedded broker and Redis), an untouched lead, and Prometheus scraping it."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    (workdir / "config.toml").write_text(CONFIG)
    env.update(SALESPULSE_DATA_DIR=str(workdir / "data"), SALESPULSE_LEAD_RESPONSE_SLA_SECONDS=str(SLA_S),
               SALESPULSE_CONFIG=str(workdir / "config.toml"))
    # Simulated time 3000x faster than the clock: a lead that becomes a deal is won or lost within about
    # 20 s (the model's hours in stage), and 600 leads a minute (~60 events/s) give several wins and
    # losses in every minute after the first half: every pipeline and quota panel has data in its range.
    salespulse = SalespulseProcess(
        "run",
        workdir / "salespulse.log",
        env,
        args=["--simulate", "--leads-per-minute", str(LEADS_PER_MINUTE), "--speedup", str(SPEEDUP)],
    )
    salespulse.env = {**env, "SALESPULSE_HTTP_PORT": str(salespulse.port), "PYTHONUNBUFFERED": "1"}
    prometheus = Prometheus(workdir, f"127.0.0.1:{salespulse.port}")
    salespulse.start()
    async with aiohttp.ClientSession() as session:
        try:
            await salespulse.wait_ready(timeout_s=90)
            status, body = await post_events(
                salespulse.url,
                {
                    "event_id": "e2e-untouched-lead",
                    "type": "lead.created",
                    "occurred_at": now_iso(),
                    "lead_id": "e2e-untouched-lead",
                    "rep_id": "rep-e2e",
                    "team": UNTOUCHED_TEAM,
                    "source": "website",
                },
            )
            assert status == 202, body
            prometheus.start()
            await prometheus.wait_ready(session)
            yield Board(prometheus, salespulse, session)
        finally:
            prometheus.stop()
            salespulse.stop(timeout_s=30)


async def wait_for_history(b: Board) -> None:
    """Until Prometheus has scraped salespulse for twice the dashboard range (so ``offset`` finds data, also for the
    previous period)."""
    history_s = 2 * RANGE_S + 10
    deadline = time.monotonic() + history_s + 90
    while time.monotonic() < deadline:
        try:
            scrapes = (
                await b.prometheus.api(
                    b.session, "query", query=f'sum_over_time(up{{job="salespulse"}}[{history_s + 10}s])'
                )
            )["result"]
            if scrapes and float(scrapes[0]["value"][1]) >= history_s:
                return
        except (QueryError, aiohttp.ClientError):
            pass
        await asyncio.sleep(2)
    raise AssertionError(
        f"Prometheus did not get {history_s} good scrapes of salespulse in time:\n"
        f"{b.prometheus.log_tail()}\n{b.salespulse.log_tail()}"
    )


async def resolve_variables(b: Board) -> None:
    """Every template variable's values through Prometheus, as Grafana would offer them; "All" of a multi-value
    variable renders as the regex of all its values (``(a|b|c)``); custom variables keep their default."""
    assert set(GLOBALS) == set(board.GLOBAL_VARIABLES)
    b.values.update(GLOBALS)
    now = time.time()
    for variable in board.variables(DASHBOARD):
        if variable.type == "datasource":
            continue  # Grafana's choice of datasource: no part of any query
        if variable.type == "custom":
            assert variable.default, f"custom variable {variable.name} has no default"
            b.values[variable.name] = OVERRIDES.get(variable.name, variable.default)
            continue
        assert variable.type == "query", variable
        expr = variable.query_result()
        if expr is not None:
            result = (await b.prometheus.api(b.session, "query", query=board.substitute(expr, b.values)))["result"]
            picked = variable.pick([board.query_result_text(sample) for sample in result])
            if picked:
                b.values[variable.name] = picked[0]
            else:
                b.unresolved[variable.name] = f"query_result({expr}) gave nothing the regex picks: {result}"
            continue
        selector, label = variable.label_values()
        missing = board.variables_used(selector) - set(b.values)
        if missing:
            b.unresolved[variable.name] = f"depends on unresolved ${', $'.join(sorted(missing))}"
            continue
        selector = board.substitute(selector, b.values)
        series = await b.prometheus.api(b.session, "series", **{"match[]": selector, "start": now - 300, "end": now})
        found = sorted({s[label] for s in series if label in s})
        if not found:
            b.unresolved[variable.name] = f"label_values({selector}, {label}) found nothing"
            continue
        b.values[variable.name] = board.prometheus_multi_value(found) if variable.multi else found[0]


@pytest_asyncio.fixture(scope="module")
async def resolved(stack: Board) -> Board:
    await wait_for_history(stack)
    await resolve_variables(stack)
    return stack


def has_finite_value(result_type: str, result: list[dict[str, Any]]) -> bool:
    if result_type == "vector":
        samples = [r["value"] for r in result]
    elif result_type == "matrix":
        samples = [v for r in result for v in r["values"]]
    else:
        samples = [result] if result else []
    return any(math.isfinite(float(value)) for _, value in samples)


async def absent_families(b: Board, expr: str) -> list[str]:
    """The salespulse series names of ``expr`` that Prometheus has no series of at all."""
    missing = []
    for name in sorted(board.metric_names(expr)):
        if not (await b.prometheus.api(b.session, "query", query=f"count({name})"))["result"]:
            missing.append(name)
    return missing


def panel_cases() -> Iterator[Any]:
    for panel in PANELS:
        yield pytest.param(panel, id=panel["title"])


@pytest.mark.parametrize("panel", list(panel_cases()))
async def test_dashboard_panel_has_data(resolved: Board, panel: dict[str, Any]) -> None:
    targets = board.targets(panel)
    assert targets, f"panel {panel['title']!r} has no query"
    problems = []
    now = time.time()
    for target in targets:
        blocked = {v: resolved.unresolved[v] for v in board.variables_used(target.expr) if v in resolved.unresolved}
        if blocked:
            problems.append(f"{target.ref_id}: unresolved variables {blocked}")
            continue
        expr = board.substitute(target.expr, resolved.values)
        try:
            if target.instant:
                data = await resolved.prometheus.api(resolved.session, "query", query=expr, time=now)
            else:
                data = await resolved.prometheus.api(
                    resolved.session, "query_range", query=expr, start=now - RANGE_S, end=now, step=2
                )
        except QueryError as exc:
            problems.append(f"{target.ref_id}: Prometheus refused the query: {exc}\n    {expr}")
            continue
        if not has_finite_value(data["resultType"], data["result"]):
            absent = await absent_families(resolved, expr)
            why = f"no series at all of {absent}" if absent else f"only empty/NaN results ({len(data['result'])} series)"
            problems.append(f"{target.ref_id}: no data: {why}\n    {expr}")
    assert not problems, f"panel {panel['title']!r}:\n" + "\n".join(problems)


async def test_template_variables_resolve_to_real_label_values(resolved: Board) -> None:
    for variable in board.variables(DASHBOARD):
        if variable.type == "datasource":
            continue
        assert variable.name not in resolved.unresolved, (variable.name, resolved.unresolved[variable.name])
        assert resolved.values[variable.name], variable.name
    assert resolved.values["sla"] == str(SLA_S)  # from salespulse_lead_response_sla_seconds, not by hand
    assert UNTOUCHED_TEAM in resolved.values["team"]
    assert "rep-e2e" not in resolved.values["rep"]  # rep comes from activities: that rep never did anything


async def test_slow_lead_alert_fires_in_prometheus_for_the_untouched_lead(stack: Board) -> None:
    deadline = time.monotonic() + SLA_S + 60 + 90  # SLA, the rule's `for: 1m`, slack for a loaded machine
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        alerts = (await stack.prometheus.api(stack.session, "alerts"))["alerts"]
        seen = [a for a in alerts if a["labels"].get("alertname") == "SalespulseLeadAwaitingTooLong"]
        ours = [a for a in seen if a["labels"].get("team") == UNTOUCHED_TEAM]
        if ours and ours[0]["state"] == "firing":
            alert = ours[0]
            assert alert["labels"]["severity"] == "critical"
            assert float(alert["value"]) > SLA_S
            assert f"Team {UNTOUCHED_TEAM}: a lead has been waiting" in alert["annotations"]["summary"]
            assert "Leads of the team awaiting a first touch: 1." in alert["annotations"]["description"]
            return
        await asyncio.sleep(2)
    raise AssertionError(
        f"SalespulseLeadAwaitingTooLong never fired for {UNTOUCHED_TEAM}; alerts seen: {seen}\n"
        f"{stack.prometheus.log_tail()}"
    )


async def test_worker_health_metrics_reach_prometheus(resolved: Board) -> None:
    async def value(expr: str) -> float:
        result = (await resolved.prometheus.api(resolved.session, "query", query=expr))["result"]
        assert result, f"no result for {expr}"
        return float(result[0]["value"][1])

    # salespulse run: one worker owning all 4 partitions (SALESPULSE_PARTITIONS default), each with a known lag.
    assert await value("sum(salespulse_worker_partitions_owned)") == 4
    assert await value('count(max by (partition) (salespulse_consumer_lag_records{topic="salespulse.events"}))') == 4
    # A few hundred events a minute keep up easily: the backlog stays far below the alert's 1000 records.
    assert await value(f"max(max_over_time(salespulse_consumer_lag_records[{RANGE_S}s]))") < 1000
    assert await value("sum(salespulse_worker_events_total)") > 0


async def test_revenue_against_quota_adds_up_across_the_month_gauges(resolved: Board) -> None:
    async def by_rep(expr: str) -> dict[str, float]:
        result = (await resolved.prometheus.api(resolved.session, "query", query=expr))["result"]
        return {r["metric"]["rep"]: float(r["value"][1]) for r in result}

    # Every simulated rep got a quota for this month at the start (quota.set): the month gauge has them all.
    quotas = await by_rep('max by (rep) (salespulse_month_quota_amount{currency="USD"})')
    assert quotas and quotas == await by_rep('max by (rep) (salespulse_quota_amount{currency="USD"})')
    # Every deal of the run was won this month (unless the run straddles midnight at a month's end), so the
    # month's won amount per rep is the all-time revenue per rep, from the same scrape.
    won = await by_rep('sum by (rep) (salespulse_month_revenue_won_amount{currency="USD"})')
    assert won and won == await by_rep('sum by (rep) (salespulse_revenue_won_total{currency="USD"})')
    assert set(won) <= set(quotas)


async def _query(b: Board, expr: str, at: float | None = None, **values: str) -> list[dict[str, Any]]:
    """An instant query with the dashboard's variables (``values`` override them), at ``at`` (default now)."""
    params = {"query": board.substitute(expr, {**b.values, **values})}
    if at is not None:
        params["time"] = str(at)
    return (await b.prometheus.api(b.session, "query", **params))["result"]


async def test_a_range_longer_than_the_history_shows_nothing_rather_than_all_time_totals(resolved: Board) -> None:
    # The trap: without the guard, "in the range" falls back to the all-time total when nothing is that old.
    unguarded = "sum(salespulse_leads_created_total) - (sum(salespulse_leads_created_total offset 6h) or vector(0))"
    (trap,) = await _query(resolved, unguarded)
    (total,) = await _query(resolved, "sum(salespulse_leads_created_total)")
    assert float(trap["value"][1]) == float(total["value"][1]) > 0
    checked, shown = 0, []
    for panel in PANELS:
        for target in board.targets(panel):
            if "offset $__range" not in target.expr or not target.instant:
                continue
            if "salespulse_team_open_pipeline_amount" in target.expr:
                continue  # a gauge's value at the start of the range: simply absent when too old, never a total
            checked += 1
            result = await _query(resolved, target.expr, __range=LONG_RANGE)
            if has_finite_value("vector", result):
                shown.append(f"{panel['title']} {target.ref_id}: {result[:3]}")
            # and with the dashboard's range, which the history covers, the same query has data
            assert has_finite_value("vector", await _query(resolved, target.expr)), (panel["title"], target.ref_id)
    assert checked >= 20 and not shown, "\n".join(shown)


async def test_the_funnel_is_in_the_configured_stage_order(resolved: Board) -> None:
    (panel,) = [p for p in PANELS if p["title"] == "Funnel: deals entering each stage"]
    frames = {}
    for target in board.targets(panel):
        frames[target.ref_id] = {r["metric"]["stage"]: float(r["value"][1]) for r in await _query(resolved, target.expr)}
    entries, order = frames["A"], frames["B"]
    assert sorted(order, key=order.get) == DEFAULT_STAGE_ORDER != sorted(DEFAULT_STAGE_ORDER)
    assert entries and set(entries) <= set(order), (entries, order)
    # The panel's transformations: merge on the stage, sort by the order, drop it: the bars come in funnel order.
    (merge, sort, organize) = panel["transformations"]
    assert sort["options"]["sort"] == [{"field": "Value #B", "desc": False}]
    rows = sorted(({"stage": s, "Value #A": entries.get(s), "Value #B": v} for s, v in order.items()),
                  key=lambda row: row["Value #B"])
    shown = [row["stage"] for row in rows if row["Value #A"] is not None]
    assert shown == [stage for stage in DEFAULT_STAGE_ORDER if stage in entries]
    assert shown[0] == "qualification"


async def test_rep_names_and_targets_come_from_the_config(resolved: Board) -> None:
    names = {r["metric"]["rep"]: r["metric"]["display_name"] for r in await _query(resolved, "salespulse_rep_info")}
    assert names == {"rep-001": "Ana Silva", "rep-002": "Ben Okafor"}
    (panel,) = [p for p in PANELS if p["title"] == "Activity today against target"]
    (target,) = board.targets(panel)
    result = await _query(resolved, target.expr)
    shown = {r["metric"]["display_name"] for r in result}
    assert {"Ana Silva", "Ben Okafor"} <= shown and "rep-003" in shown  # a rep without a name keeps its id
    assert {r["metric"]["kind"] for r in result} <= {"call", "email_sent"}


async def test_the_team_filter_narrows_pipeline_panels_and_all_teams_is_the_whole(resolved: Board) -> None:
    teams = resolved.values["team"].strip("()").split("|")
    assert len(teams) > 2, teams
    at = time.time() - 2  # one instant for every query: the simulation moves the numbers at every scrape

    async def value(title: str, **values: str) -> float:
        (panel,) = [p for p in PANELS if p["title"] == title]
        (target,) = board.targets(panel)
        result = await _query(resolved, target.expr, at, **values)
        return sum(float(r["value"][1]) for r in result)

    currency = f'currency="{resolved.values["currency"]}"'
    checks = {
        "Open pipeline ($currency)": f"sum(salespulse_open_pipeline_amount{{{currency}}})",
        "Weighted pipeline (forecast) ($currency)": f"sum(salespulse_weighted_pipeline_amount{{{currency}}})",
        "Open deals": "sum(salespulse_open_deals)",
        "Revenue won ($currency)": f"sum(salespulse_revenue_won_total{{{currency}}}) - "
                                   f"sum(salespulse_revenue_won_total{{{currency}}} offset {RANGE_S}s)",
    }
    for title, whole in checks.items():
        (expected,) = await _query(resolved, whole, at)
        everyone = await value(title)
        assert everyone == pytest.approx(float(expected["value"][1])), title  # All teams: the contract's total
        per_team = [await value(title, team=team) for team in teams]
        assert all(part < everyone for part in per_team if part) and sum(per_team) == pytest.approx(everyone), (
            title, per_team, everyone)
