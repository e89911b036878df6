"""Control characters, NUL and very long values in every string field of every endpoint's payloads (issue 11):
whatever ingest accepts holds none of them, and a worker counting everything accepted, plus poisoned events
written to the log directly (as an older version let through), still answers ``/metrics`` with 200."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from salespulse.config import Config
from salespulse.handlers.http import build_http_app
from salespulse.handlers.webhooks import GenericWebhook
from salespulse.models.events import Event, event_to_json
from salespulse.outputs.prometheus import SkippedSeries
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.engagement.family import EngagementFamily
from salespulse.families.engagement.state import OUTREACH_CODEC
from salespulse.families.lead_response.family import LeadResponseFamily
from salespulse.families.lead_response.state import LEAD_CODEC
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.state import PIPELINE_CODEC
from salespulse.engine.processor import BatchProcessor, Record
from salespulse.engine.record_log import RecordLog
from tests.unit.crm_http import MemorySink, crm_app, serving
from tests.unit.test_crm_fuzz import CDC, CLOSE, ENDPOINTS, HS, PD
from tests.unit.test_crm_salesforce import OPP, outbound
from tests.unit.test_event_models import EXAMPLES

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PARTITIONS = 4

#: Poison for one string: a control character (NUL, tab, newline ...) inside an ordinary value, or a long value.
poison = st.one_of(
    st.tuples(st.sampled_from(["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x01"]), st.text(max_size=8)).map(
        lambda t: f"new{t[0]}lead{t[1]}"
    ),
    st.sampled_from(["x" * 300, "é" * 5000, "a" * 100_000]),
)


def string_slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) holding a string, at any depth."""
    slots: list[tuple[Any, Any]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        if isinstance(value, str):
            slots.append((doc, key))
        else:
            slots += string_slots(value)
    return slots


@st.composite
def poisoned(draw: st.DrawFn, template: Any) -> Any:
    """The template with one to three of its string fields poisoned."""
    doc = copy.deepcopy(template)
    slots = string_slots(doc)
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(poison)
    return doc


def outbound_bodies() -> st.SearchStrategy[bytes]:
    fields = st.fixed_dictionaries({}, optional={name: poison for name in sorted(OPP)})
    return fields.map(lambda f: outbound(("04l000000000001AAA", "Opportunity", {**OPP, **{
        k: v.replace("<", "").replace("&", "") for k, v in f.items()}})))


BODIES: dict[str, st.SearchStrategy[bytes]] = {
    "events": st.sampled_from(sorted(t for t in EXAMPLES if not t.startswith(("deal.lead", "lead.deal")))).flatmap(
        lambda t: poisoned({**EXAMPLES[t], "team": "emea", "source": "ads"})).map(orjson.dumps),
    "hubspot": st.sampled_from(HS).flatmap(lambda item: poisoned([{**item, "propertyValue": item["propertyValue"] or "v"}])).map(orjson.dumps),
    "pipedrive": poisoned(PD).map(orjson.dumps),
    "close": poisoned(CLOSE).map(orjson.dumps),
    "salesforce_cdc": poisoned(CDC).map(orjson.dumps),
    "salesforce_outbound": outbound_bodies(),
}


@pytest.fixture(scope="module")
def ingest() -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient, MemorySink]]:
    """Every endpoint (the generic one too) on one in-process server, with an in-memory event log."""
    sink = MemorySink()
    app, _ = crm_app(sink)
    app.router.add_post("/webhooks/events", GenericWebhook(sink, None, CollectorRegistry()).handle)  # type: ignore[arg-type]
    with serving(app) as (loop, client):
        yield loop, client, sink


def strings_of(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


ACCEPTED: list[Event] = []


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_no_control_character_gets_past_ingest_from_any_string_field(endpoint: str, ingest) -> None:
    loop, client, sink = ingest
    path = "/webhooks/events" if endpoint == "events" else ENDPOINTS[endpoint][0]
    headers_for = (lambda url, body: {}) if endpoint == "events" else ENDPOINTS[endpoint][2]
    url = str(client.make_url(path))
    statuses: set[int] = set()
    dead_before = len(sink.dead)

    async def post(body: bytes) -> int:
        async with client.post(path, data=body, headers=headers_for(url, body)) as response:
            await response.read()
            return response.status

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=BODIES[endpoint])
    def check(body: bytes) -> None:
        published = len(sink.published)
        status = loop.run_until_complete(post(body))
        assert status < 500
        statuses.add(status)
        for events in sink.published[published:]:
            for event in events:
                for text in strings_of(orjson.loads(event_to_json(event))):
                    assert not CONTROL.search(text), (endpoint, text)
                    assert len(text) <= 256
                ACCEPTED.append(event)

    check()
    assert statuses - {200, 202} or len(sink.dead) > dead_before, statuses  # poison refused, or dead-lettered


def _worker() -> tuple[list[Any], BatchProcessor]:
    table: dict[str, bytes] = {}
    utc, retention = ZoneInfo("UTC"), 35 * 86400
    families = [
        ActivityFamily(CellStore(table, "activity"), utc, retention),
        LeadResponseFamily(CellStore(table, "response"), RecordLog(table, "leads", LEAD_CODEC), utc, retention, sla_s=300),
        PipelineFamily(CellStore(table, "pipeline"), RecordLog(table, "pstate", PIPELINE_CODEC), utc, retention,
                       pipelines=Config().pipeline_specs()),
        EngagementFamily(CellStore(table, "engagement"), RecordLog(table, "outreach", OUTREACH_CODEC), utc, retention),
    ]
    dead: list[str] = []
    processor = BatchProcessor(DedupIndex(table, 72 * 3600), families, lambda record, why: dead.append(why))
    return families, processor


@given(raw=st.lists(st.sampled_from(sorted(EXAMPLES)).flatmap(lambda t: poisoned(EXAMPLES[t])), min_size=20, max_size=20))
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_a_worker_counting_everything_accepted_and_poisoned_log_records_still_serves_metrics(raw: list[Any]) -> None:
    families, processor = _worker()
    records: list[Record] = []
    offsets = [0] * PARTITIONS
    values = [event_to_json(event) for event in ACCEPTED] + [orjson.dumps(item) for item in raw]
    for n, value in enumerate(values):
        partition = n % PARTITIONS
        records.append((partition, offsets[partition], value, 1_700_000_000.0))
        offsets[partition] += 1
    processor.process(records)
    assert processor.totals.dead_lettered >= len(raw) - sum(  # a poisoned field may have been stripped whitespace
        1 for item in raw if not any(CONTROL.search(s.strip()) or len(s) > 256 for s in strings_of(item)))

    registry = CollectorRegistry()
    skipped = SkippedSeries(registry)
    owned = lambda: range(PARTITIONS)  # noqa: E731
    for family in families:
        registry.register(family.collector(owned, skipped=skipped))

    async def scrape() -> tuple[int, str]:
        async with TestClient(TestServer(build_http_app(registry, {}))) as client:
            async with client.get("/metrics") as response:
                return response.status, await response.text()

    status, text = asyncio.run(scrape())
    assert status == 200
    assert processor.totals.processed > 0 and "salespulse_stage_entries_total" in text
    for family in ("activity", "lead_response", "pipeline", "engagement"):  # nothing poisoned reached the state
        assert not registry.get_sample_value("salespulse_metric_series_skipped_total", {"family": family})
