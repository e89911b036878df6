"""The JSON Schemas shipped in ``schemas/``: in step with the models, and agreeing with them on real records."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, ValidationError

import salespulse.models.schema_export as schema_export
from salespulse.models.schema_export import METRIC_RECORDS
from salespulse.models.events import EVENT_TYPES, EventAdapter, event_to_json
from salespulse.families.activity.spec import SPEC as ACTIVITY
from salespulse.models.schema_export import export_schemas, rendered_schemas, stale_schemas
from salespulse.families.activity.family import ActivityFamily
from salespulse.engine.cells import CellStore
from tests.unit.test_event_models import EXAMPLES, example

ActivityPartial = ACTIVITY.record_model

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
NOW = datetime(2026, 11, 22, 15, 0, tzinfo=timezone.utc).timestamp()


def validator(relative: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMAS / relative).read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# --- staleness --------------------------------------------------------------------------------------------------


def test_committed_schemas_match_the_models() -> None:
    stale = stale_schemas(SCHEMAS)
    assert stale == [], f"re-export with salespulse.models.schema_export.export_schemas: {stale}"


def test_stale_schemas_runs_relative_to_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert stale_schemas(Path("schemas")) == []


def test_every_shipped_schema_file_is_rendered_from_a_model() -> None:
    shipped = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.rglob("*.json")}
    assert shipped == set(rendered_schemas())
    metrics = {f"metrics/{family}.json" for family in METRIC_RECORDS}
    assert {f"events/{t}.json" for t in EVENT_TYPES} | {"events/event.json"} | metrics == shipped


def test_stale_schemas_names_an_edited_and_a_missing_file(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, out)
    assert stale_schemas(out) == []
    edited = out / "events" / "call.logged.json"
    edited.write_bytes(edited.read_bytes().replace(b'"busy"', b'"engaged"'))
    (out / "metrics" / "activity.json").unlink()
    assert sorted(stale_schemas(out)) == sorted([edited, out / "metrics" / "activity.json"])
    export_schemas(out)
    assert stale_schemas(out) == []


def test_a_model_change_without_re_export_makes_the_schemas_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    class ActivityPartialV2(ActivityPartial):
        model_config = ConfigDict(extra="forbid")
        region: str | None = None

    monkeypatch.setattr(schema_export, "METRIC_RECORDS", {"activity": ActivityPartialV2})
    assert stale_schemas(SCHEMAS) == [SCHEMAS / "metrics" / "activity.json"]


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for path in SCHEMAS.rglob("*.json"):
        Draft202012Validator.check_schema(orjson.loads(path.read_bytes()))


# --- events -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_example_event_validates_against_the_union_schema(event_type: str) -> None:
    validator("events/event.json").validate(EXAMPLES[event_type])


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_example_event_validates_against_its_own_type_schema(event_type: str) -> None:
    validator(f"events/{event_type}.json").validate(EXAMPLES[event_type])


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_kafka_value_of_each_example_validates_against_the_union_schema(event_type: str) -> None:
    written = orjson.loads(event_to_json(EventAdapter.validate_python(EXAMPLES[event_type])))
    validator("events/event.json").validate(written)


@pytest.mark.parametrize(
    "item",
    [
        example("call.logged", outcome="answered"),
        example("call.logged", type="call.made"),
        example("call.logged", rep_id=None),
        example("call.logged", event_id="x" * 129),
        example("email.sent", colour="blue"),
        example("deal.won", currency="usd"),
        example("deal.created", probability=2),
        example("quota.set", period="2026-13"),
    ],
    ids=["enum", "type", "missing", "too_long", "extra", "currency", "probability", "period"],
)
def test_union_schema_rejects_what_the_model_rejects(item: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EventAdapter.validate_python(item)
    assert list(validator("events/event.json").iter_errors(item))


# --- activity partial records -----------------------------------------------------------------------------------


def rendered_records() -> list[dict[str, Any]]:
    table: dict[str, bytes] = {}
    family = ActivityFamily(CellStore(table, "activity"), ZoneInfo("Europe/Oslo"), retention_s=35 * 86400)
    for partition in (0, 3):
        family.cells.load_partition(partition)
    events = [
        example("call.logged", event_id="a1", occurred_at="2026-11-22T14:10:00Z"),
        example("call.logged", event_id="a2", occurred_at="2026-11-22T13:10:00Z", outcome="no_answer", team="north"),
        example("email.sent", event_id="a3", occurred_at="2026-11-21T23:30:00Z"),
        example("activity.logged", event_id="a4", occurred_at="2026-11-20T10:00:00Z", kind="LinkedIn Message"),
        example("meeting.held", event_id="a5", occurred_at="2026-11-22T14:59:00Z", rep_id="R2"),
    ]
    for offset, item in enumerate(events):
        family.apply(offset % 2 * 3, offset, EventAdapter.validate_python(item), NOW)
    for partition in (0, 3):
        family.cells.write_touched(partition, 10)
        family.partition_wm[partition] = 10
    return [partial.record for partial in family.render({0, 3}, NOW)]


def test_rendered_records_cover_every_window_kind_and_scope() -> None:
    records = rendered_records()
    windows = {r["window"].split(":")[0] for r in records}
    assert windows == {"all", "day", "week", "month", "rolling"}
    assert {r["scope"] for r in records} == {"rep", "team"}
    assert {r["partition"] for r in records} == {0, 3}
    assert "unassigned" in {r["id"] for r in records if r["scope"] == "team"}


def test_rendered_activity_record_validates_against_the_shipped_schema() -> None:
    check = validator("metrics/activity.json")
    for record in rendered_records():
        check.validate(orjson.loads(orjson.dumps(record)))
        assert datetime.fromisoformat(record["updated_at"]).utcoffset() is not None


def test_rendered_activity_record_validates_against_the_pydantic_model() -> None:
    for record in rendered_records():
        parsed = ActivityPartial.model_validate_json(orjson.dumps(record))
        assert parsed.model_dump(mode="json")["counts"] == record["counts"]
        counts = parsed.counts
        leaves = [f for f in counts if f != "total" and not any(g.startswith(f + ":") for g in counts)]
        assert counts["total"] == sum(counts[f] for f in leaves)


@pytest.mark.parametrize(
    "change",
    [{"window": "quarter:2026-Q4"}, {"scope": "org"}, {"partition": -1}, {"extra": 1}, {"counts": {"call": 1.5}}],
    ids=["window", "scope", "partition", "extra", "counts"],
)
def test_schema_and_model_reject_a_malformed_activity_record(change: dict[str, Any]) -> None:
    record = rendered_records()[0] | change
    with pytest.raises(ValidationError):
        ActivityPartial.model_validate_json(orjson.dumps(record))
    assert list(validator("metrics/activity.json").iter_errors(orjson.loads(orjson.dumps(record))))


def test_shipped_metric_schema_is_the_activity_partial_model_schema() -> None:
    assert orjson.loads((SCHEMAS / "metrics" / "activity.json").read_bytes()) == ActivityPartial.model_json_schema()
    assert issubclass(ActivityPartial, BaseModel)
