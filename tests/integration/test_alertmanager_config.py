"""deploy/alertmanager/alertmanager.yml, checked by Debian's amtool (the same Alertmanager as the tests'):
valid, routes each team's alerts to its own receiver (Slack and the manager's e-mail), anything else to
sales-ops, and inhibits per-lead pages while the team-level alert fires."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"


def _amtool(*args: str) -> str:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is not on PATH: scripts/test.sh installs Debian's prometheus-alertmanager"
    done = subprocess.run([amtool, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _receiver_of(**labels: str) -> str:
    pairs = [f"{name}={value}" for name, value in labels.items()]
    return _amtool("config", "routes", "test", f"--config.file={CONFIG}", *pairs).strip()


def test_the_shipped_alertmanager_config_is_valid() -> None:
    assert "SUCCESS" in _amtool("check-config", str(CONFIG))


@pytest.mark.parametrize("team", ["emea", "amer"])
@pytest.mark.parametrize("alertname", ["SalespulseLeadResponseSlaBreached", "SalespulseLeadResponseSlaWarning"])
def test_a_per_lead_alert_goes_to_its_team(team: str, alertname: str) -> None:
    severity = "critical" if alertname.endswith("Breached") else "warning"
    assert _receiver_of(alertname=alertname, team=team, severity=severity, lead_id="0-1/42") == f"team-{team}"


def test_a_team_without_a_route_and_worker_health_go_to_sales_ops() -> None:
    assert _receiver_of(alertname="SalespulseLeadResponseSlaBreached", team="apac", severity="critical") == "sales-ops"
    assert _receiver_of(alertname="SalespulseWorkerDown", severity="critical") == "sales-ops"


def test_each_team_receiver_reaches_slack_and_the_manager_and_groups_per_team() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["group_by"][0] == "team"
    for receiver in config["receivers"]:
        if receiver["name"].startswith("team-"):
            assert receiver["slack_configs"] and receiver["email_configs"], receiver["name"]


def test_per_lead_pages_are_inhibited_while_the_team_level_alert_fires() -> None:
    rules = yaml.safe_load(CONFIG.read_text())["inhibit_rules"]
    per_lead = [r for r in rules if r["source_matchers"] == ['alertname = "SalespulseLeadAwaitingTooLong"']
                and any("SalespulseLeadResponseSla" in m for m in r["target_matchers"])]
    assert per_lead and per_lead[0]["equal"] == ["team"]


async def test_the_shipped_inhibition_suppresses_per_lead_alerts_of_a_team_in_a_real_alertmanager(
    tmp_path: Path,
) -> None:
    """The shipped routes and inhibit rules, with every receiver pointed at the test's webhook."""
    import time
    from datetime import datetime, timezone

    import aiohttp

    from tests.alertmanager import Alertmanager, Webhook

    webhook = Webhook()
    await webhook.start()
    config = yaml.safe_load(CONFIG.read_text())
    config["global"] = {"resolve_timeout": "5m"}
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}
        for r in config["receivers"]
    ]
    manager = Alertmanager(tmp_path / "am", config)
    await manager.start()
    try:
        now = datetime.fromtimestamp(time.time() - 60, timezone.utc).isoformat()

        def alert(alertname: str, team: str, **labels: str) -> dict[str, object]:
            return {"labels": {"alertname": alertname, "team": team, **labels}, "startsAt": now}

        per_lead = {"severity": "critical", "rep": "r1", "source": "web"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{manager.url}/api/v2/alerts", json=[
                alert("SalespulseLeadAwaitingTooLong", "emea", severity="critical"),
                alert("SalespulseLeadResponseSlaBreached", "emea", lead_id="0-1/1", **per_lead),
                alert("SalespulseLeadResponseSlaBreached", "amer", lead_id="0-1/2", **per_lead),
            ]) as response:
                assert response.status == 200, await response.text()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            emea = await manager.alerts(alertname="SalespulseLeadResponseSlaBreached", team="emea")
            amer = await manager.alerts(alertname="SalespulseLeadResponseSlaBreached", team="amer")
            if emea and amer and emea[0]["status"]["inhibitedBy"]:
                break
            await asyncio.sleep(0.2)
        assert emea[0]["status"]["state"] == "suppressed" and emea[0]["status"]["inhibitedBy"], emea
        assert amer[0]["status"]["state"] == "active", amer  # another team's page is not held back
        await webhook.wait_for(lambda _: webhook.alerts(team="amer", alertname="SalespulseLeadResponseSlaBreached"))
        assert webhook.alerts(team="emea", alertname="SalespulseLeadAwaitingTooLong")  # the team page itself
        assert not webhook.alerts(team="emea", alertname="SalespulseLeadResponseSlaBreached")
    finally:
        manager.stop()
        await webhook.stop()
