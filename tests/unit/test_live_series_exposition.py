"""The live series (what no scope holds: waiting leads, SLA breaches, open pipeline now, quotas, this month)
are declared in the families' specs and rendered by one generic collector; their exposition is pinned to
``golden/live_series.txt``, the text the hand-written collectors gave for the same states (public surface:
names, HELP texts, labels, values and their order stay as they were).

Regenerate only on purpose: ``.venv/bin/python -m tests.unit.test_live_series_exposition --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, generate_latest

from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from tests.unit.test_alert_clock import created as lead_created
from tests.unit.test_pipeline import DAY, NOW, Cluster, created, lost, moved, quota, won

GOLDEN = Path(__file__).parent / "golden" / "live_series.txt"
LIVE = ("salespulse_leads_awaiting_response", "salespulse_oldest_awaiting_lead_age_seconds",
        "salespulse_lead_response_sla_breaches", "salespulse_lead_response_sla_seconds", "salespulse_stage_transitions",
        "salespulse_open_deals", "salespulse_open_pipeline_amount", "salespulse_weighted_pipeline_amount",
        "salespulse_quota_amount", "salespulse_month_revenue_won_amount", "salespulse_month_quota_amount")


def exposition() -> str:
    cluster = Cluster()
    cluster.send([
        quota("anna", "2026-11", 100_000), quota("ben", "2026-11", 50_000), quota("anna", "2026-12", 70_000),
        created("D1", NOW - 5 * DAY), moved("D1", NOW - 4 * DAY, "qualified"), won("D1", NOW - 2 * DAY, amount=30_000),
        created("D2", NOW - 5 * DAY, rep="ben", currency="EUR"), moved("D2", NOW - 3 * DAY, "proposal"),
        moved("D2", NOW - DAY, "qualified", eid="back"),
        created("D3", NOW - 4 * DAY, rep="cleo"), lost("D3", NOW - DAY),
        created("D4", NOW - 2 * DAY, amount=5_000), created("D5", NOW - DAY, stage="proposal", amount=None),
    ])
    cluster.drain(NOW)
    registry = CollectorRegistry()
    registry.register(cluster.family.collector(lambda: list(range(3)), clock=lambda: NOW))
    table: dict[str, bytes] = {}
    leads = LeadResponseFamily(CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), ZoneInfo("UTC"), 35 * DAY, 300)
    processor = BatchProcessor(DedupIndex(table, 3600), [leads], lambda r, why: None)
    processor.process([(0, 0, lead_created("L1", NOW - 1000)), (0, 1, lead_created("L2", NOW - 100)),
                       (1, 0, lead_created("L3", NOW - 50))], now=NOW)
    leads.due_alerts({0, 1}, NOW)
    registry.register(leads.collector(lambda: [0, 1], clock=lambda: NOW))
    text = generate_latest(registry).decode()
    blocks = [block for block in text.split("# HELP ") if block.split(" ", 1)[0].removesuffix("_total") in LIVE]
    return "".join("# HELP " + block for block in blocks)


def test_the_live_series_expose_exactly_what_the_hand_written_collectors_did() -> None:
    text = exposition()
    assert {line.split(" ")[2].removesuffix("_total") for line in text.splitlines() if line.startswith("# HELP")} == set(LIVE)
    assert text == GOLDEN.read_text()


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(exposition())
