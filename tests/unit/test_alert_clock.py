"""AlertClock: fires due alerts, publishes each status once, and reads back what a crashed owner sent."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import orjson
from prometheus_client import CollectorRegistry

from salespulse.engine.alert_clock import AlertClock
from salespulse.outputs.prometheus import WorkerHealth
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.engine.processor import BatchProcessor
from salespulse.engine.record_log import RecordLog
from tests.unit.alert_helpers import FakeSinks

NOW = 1_800_000_000.0
SLA = 300


def worker(table: dict[str, bytes]) -> tuple[BatchProcessor, LeadResponseFamily]:
    family = LeadResponseFamily(CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), ZoneInfo("UTC"), 35 * 86400, SLA)
    return BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None), family


def created(lead: str, at: float) -> bytes:
    from datetime import datetime, timezone

    return orjson.dumps({"event_id": f"c-{lead}", "type": "lead.created", "lead_id": lead, "rep_id": "r1",
                         "team": "emea", "occurred_at": datetime.fromtimestamp(at, timezone.utc).isoformat()})


async def test_a_due_lead_fires_once_and_is_not_published_again_on_later_ticks() -> None:
    processor, family = worker({})
    processor.process([(0, 0, created("L1", NOW))], now=NOW)
    sinks = FakeSinks()
    clock = AlertClock([family], lambda: {0}, sinks, WorkerHealth(CollectorRegistry()))  # type: ignore[arg-type]
    assert await clock.tick(now=NOW + SLA - 1) == 0
    assert await clock.tick(now=NOW + SLA + 0.05) == 1
    assert await clock.tick(now=NOW + SLA + 1) == 0
    assert [(a["lead_id"], a["status"]) for a in sinks.sent] == [("L1", "firing")]
    assert sinks.read_backs == []  # nothing inherited: no read-back on the hot path


async def test_a_new_owner_reads_back_alerts_the_crashed_owner_sent_and_publishes_only_the_rest() -> None:
    table: dict[str, bytes] = {}
    processor, family = worker(table)
    processor.process([(0, 0, created("L1", NOW)), (0, 1, created("L2", NOW))], now=NOW)
    family.due_alerts({0}, NOW + SLA + 0.1)  # fired and recorded; the crash comes before publishing was recorded
    new_owner, takeover = worker(dict(table))
    new_owner.ensure_loaded(0)
    sinks = FakeSinks(already={("L1", "firing")})  # L1 made it to the topic before the crash, L2 did not
    clock = AlertClock([takeover], lambda: {0}, sinks, WorkerHealth(CollectorRegistry()))  # type: ignore[arg-type]
    assert await clock.tick(now=NOW + SLA + 5) == 1
    assert sinks.read_backs == [0]
    assert [(a["lead_id"], a["status"]) for a in sinks.sent] == [("L2", "firing")]
    assert await clock.tick(now=NOW + SLA + 6) == 0 and sinks.read_backs == [0]


async def test_a_lead_written_before_an_outage_still_alerts_when_processed_after_it() -> None:
    late = NOW + SLA + 3600  # the worker was down for an hour past the lead's deadline
    processor, family = worker({})
    processor.process([(0, 0, created("L1", NOW), NOW + 0.2)], now=late)  # record timestamp: ingest time
    processor.process([(0, 1, created("L2", NOW))], now=late)  # no timestamp: judged by the clock (history)
    sinks = FakeSinks()
    clock = AlertClock([family], lambda: {0}, sinks, WorkerHealth(CollectorRegistry()))  # type: ignore[arg-type]
    assert await clock.tick(now=late) == 1
    assert [(a["lead_id"], a["status"]) for a in sinks.sent] == [("L1", "firing")]
