"""docs/architecture.md's "add a family" walkthrough holds: one folder and one registry line suffice."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from salespulse import settings, topics
from salespulse.families import registry
from salespulse.models import schema_export
from salespulse.settings import Settings
from salespulse.topics import metrics_topic

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry line (the walkthrough's step 5).
    monkeypatch.setitem(registry.FAMILIES, "meetings", "tests.unit.example_family.build")
    # What importing the modules computes from the registry's names (settings, then topics).
    monkeypatch.setattr(registry, "NAMES", tuple(registry.FAMILIES))
    monkeypatch.setattr(settings, "METRIC_FAMILIES", registry.NAMES)
    monkeypatch.setattr(topics, "METRIC_FAMILIES", registry.NAMES)


def _held(i: int, rep: str) -> bytes:
    return orjson.dumps({"event_id": f"m{i}", "type": "meeting.held", "occurred_at": "2026-11-22T10:00:00Z",
                         "lead_id": f"L{i}", "meeting_id": f"M{i}", "rep_id": rep, "team": "north"})


def test_a_registered_family_is_built_applied_rendered_and_published_like_the_others(registered: None) -> None:
    from salespulse.config import Config
    from salespulse.engine.dedup import DedupIndex
    from salespulse.engine.processor import BatchProcessor
    from salespulse.engine.stores import family_context
    from zoneinfo import ZoneInfo

    table: dict[str, bytes] = {}
    context = family_context(table, Config(), ZoneInfo("UTC"), 35 * 86400, 300)
    family = registry.load("meetings").build(context)
    BatchProcessor(DedupIndex(table, 3600), [family], lambda r, why: None).process(
        [(0, 0, _held(1, "anna")), (0, 1, _held(2, "anna")), (0, 2, _held(2, "anna"))], now=NOW
    )
    partials = {p.redis_key: p for p in family.render({0}, NOW)}
    anna = partials["salespulse:meetings:rep:anna:all"]
    assert anna.fields == {"held": 2}  # the redelivery is counted once
    family.spec.record_model.model_validate(anna.record)  # the metric record matches its generated model
    assert "salespulse:meetings:team:north:day:2026-11-22" in partials
    assert family.derived.redis_spec()["ratios"] == []
    registry_ = CollectorRegistry()
    registry_.register(family.collector(lambda: {0}))
    generate_latest(registry_)  # a family with no series exports nothing and breaks nothing


def test_the_settings_topics_schemas_and_docs_know_a_registered_family(registered: None) -> None:
    assert "meetings" in Settings(families="activity,meetings").family_names
    assert metrics_topic("meetings") == "salespulse.metrics.meetings"
    assert "meetings" in registry.specs()
    schema = schema_export._schema(registry.specs()["meetings"].record_model)
    assert schema["properties"]["family"]["const"] == "meetings"
    from salespulse.families import docs

    assert "<!-- spec:meetings -->\n| field | kind | meaning |" in docs.render("")
