"""``salespulse crm check`` against local stand-ins of each CRM's API (their documented response shapes): the
credentials are checked, pipelines, stages and owners listed, and the written mapping loads and orders stages
as the CRM does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from salespulse.cli import main
from salespulse.config import load_config
from tests.hubspot_standin import TOKEN, HubSpotStandIn, owner, pipeline, serving
from tests.unit.test_crm_hubspot_enrichment import PIPELINE

PIPEDRIVE_TOKEN = "pd-token"


async def invoke(args: list[str], env: dict[str, str]) -> Result:
    """The CLI in a thread: it blocks (the official HubSpot client) while the stand-ins answer on this loop."""
    return await asyncio.to_thread(CliRunner().invoke, main, args, env=env, catch_exceptions=False)


@pytest.fixture
async def hubspot() -> AsyncIterator[HubSpotStandIn]:
    custom = pipeline("93417", "Enterprise", [("1101", "Discovery", 0.1, False), ("1102", "Signed", 1.0, True)])
    async with serving(HubSpotStandIn(pipelines=[PIPELINE, custom],
                                      owners=[owner("5001", "Anna", "Berg"), owner("5002", "Bo", "Li")])) as s:
        yield s


async def test_hubspot_check_lists_pipelines_stages_and_owners_and_writes_a_mapping_that_loads(
    hubspot: HubSpotStandIn, tmp_path: Path
) -> None:
    out = tmp_path / "crm.toml"
    env = {"SALESPULSE_HUBSPOT_ACCESS_TOKEN": TOKEN, "SALESPULSE_HUBSPOT_API_URL": hubspot.url}
    result = await invoke(["crm", "check", "hubspot", "--write", str(out)], env)
    assert result.exit_code == 0, result.output
    assert "credentials accepted" in result.output and "owners: 2" in result.output
    assert '1102 = { pipeline = "enterprise", stage = "signed", closed = true, won = true' in result.output
    assert '# 5001 = "rep-…"  # Anna Berg' in result.output  # names only as comments, never as labels
    config = tmp_path / "salespulse.toml"
    config.write_text(out.read_text())
    loaded = load_config(config)
    assert loaded.crm.hubspot.stages["1101"].stage == "discovery"
    pipelines = loaded.pipeline_specs()
    assert pipelines.direction("sales_pipeline", "qualified_to_buy", "contract_sent") == "forward"
    assert pipelines.direction("sales_pipeline", "contract_sent", "appointment_scheduled") == "backward"
    assert pipelines.closes_as("enterprise", "signed") == "won"
    assert {"/crm/v3/pipelines/deals", "/crm/v3/owners/?limit=100"} <= set(hubspot.requests)


async def test_a_refused_or_missing_token_is_a_clear_error_with_a_non_zero_exit(hubspot: HubSpotStandIn) -> None:
    refused = await invoke(["crm", "check", "hubspot"],
                           {"SALESPULSE_HUBSPOT_ACCESS_TOKEN": "wrong", "SALESPULSE_HUBSPOT_API_URL": hubspot.url})
    assert refused.exit_code == 1 and "401" in refused.output and "SALESPULSE_HUBSPOT_ACCESS_TOKEN" in refused.output
    missing = await invoke(["crm", "check", "pipedrive"], {"SALESPULSE_PIPEDRIVE_API_TOKEN": ""})
    assert missing.exit_code == 2 and "SALESPULSE_PIPEDRIVE_API_TOKEN is not set" in missing.output


def rest_standin(routes: dict[str, Any], check: Any) -> web.Application:
    """A JSON stand-in: GET path → body, after ``check(request)`` (None, or an error response)."""
    app = web.Application()

    def handler(body: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return check(request) or web.json_response(body(request) if callable(body) else body)
        return handle

    for path, body in routes.items():
        app.router.add_get(path, handler(body))
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    from salespulse.embedded.ports import free_port

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_pipedrive_stage_order_nr_makes_qualified_to_proposal_forward(tmp_path: Path) -> None:
    def check(request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-token") != PIPEDRIVE_TOKEN:
            return web.json_response({"success": False, "error": "unauthorized access", "errorCode": 401}, status=401)
        return None

    app = rest_standin({
        "/api/v1/pipelines": {"success": True, "data": [{"id": 1, "name": "SMB", "order_nr": 0, "active": True}]},
        "/api/v1/stages": {"success": True, "data": [
            {"id": 3, "order_nr": 3, "name": "Proposal", "active_flag": True, "deal_probability": 50, "pipeline_id": 1},
            {"id": 2, "order_nr": 2, "name": "Qualified", "active_flag": True, "deal_probability": 30,
             "pipeline_id": 1},
            {"id": 9, "order_nr": 9, "name": "Old", "active_flag": False, "deal_probability": 0, "pipeline_id": 1},
        ]},
        "/api/v1/users": {"success": True, "data": [{"id": 42, "name": "Bo Li", "active_flag": True}]},
    }, check)
    runner, url = await serve(app)
    try:
        out = tmp_path / "crm.toml"
        env = {"SALESPULSE_PIPEDRIVE_API_TOKEN": PIPEDRIVE_TOKEN, "SALESPULSE_PIPEDRIVE_API_URL": url}
        result = await invoke(["crm", "check", "pipedrive", "--write", str(out)], env)
        refused = await invoke(["crm", "check", "pipedrive"], {**env, "SALESPULSE_PIPEDRIVE_API_TOKEN": "bad"})
    finally:
        await runner.cleanup()
    assert result.exit_code == 0, result.output
    assert refused.exit_code == 1 and "refused" in refused.output
    pipelines = load_config(out).pipeline_specs()
    assert pipelines.funnel("smb") == ("qualified", "proposal")
    assert pipelines.direction("smb", "qualified", "proposal") == "forward"  # the case, no longer backward
    assert load_config(out).crm.pipedrive.pipelines == {"1": "smb"}


async def test_salesforce_and_close_stages_come_with_their_order_and_closed_flags(tmp_path: Path) -> None:
    def bearer(request: web.Request) -> web.Response | None:
        if request.path.startswith("/services/") and request.headers.get("Authorization") != "Bearer sf":
            return web.json_response([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                                     status=401)
        return None

    stages = [
        {"attributes": {"type": "OpportunityStage"}, "ApiName": "Prospecting", "MasterLabel": "Prospecting",
         "SortOrder": 1, "IsClosed": False, "IsWon": False, "DefaultProbability": 10.0, "IsActive": True},
        {"attributes": {"type": "OpportunityStage"}, "ApiName": "Closed Won", "MasterLabel": "Closed Won",
         "SortOrder": 9, "IsClosed": True, "IsWon": True, "DefaultProbability": 100.0, "IsActive": True},
    ]
    close_pipelines = {"data": [{"id": "pipe_1", "name": "Sales", "statuses": [
        {"id": "stat_a", "label": "Demo", "type": "active"}, {"id": "stat_w", "label": "Won", "type": "won"},
        {"id": "stat_l", "label": "Lost", "type": "lost"}]}]}
    app = rest_standin({
        "/services/data/v60.0/query": lambda request: {"totalSize": 2, "done": True, "records": stages} if
        "OpportunityStage" in request.query["q"] else {"totalSize": 1, "done": True, "records": [
            {"attributes": {"type": "User"}, "Id": "005000000000001AAA", "Name": "Sam Lee"}]},
        "/api/v1/pipeline/": close_pipelines,
        "/api/v1/user/": {"data": [{"id": "user_1", "first_name": "Sam", "last_name": "Lee"}]},
    }, bearer)
    runner, url = await serve(app)
    try:
        sf = await invoke(["crm", "check", "salesforce"], {"SALESPULSE_SALESFORCE_INSTANCE_URL": url,
                                                           "SALESPULSE_SALESFORCE_ACCESS_TOKEN": "sf"})
        close = await invoke(["crm", "check", "close"], {"SALESPULSE_CLOSE_API_KEY": "k", "SALESPULSE_CLOSE_API_URL": url})
    finally:
        await runner.cleanup()
    assert sf.exit_code == 0, sf.output
    assert '"Closed Won" = { pipeline = "default", stage = "closed_won", closed = true, won = true, ' \
           'probability = 1.0, order = 9 }' in sf.output
    assert close.exit_code == 0, close.output
    assert 'stat_l = { pipeline = "sales", stage = "lost", closed = true, order = 2 }' in close.output
