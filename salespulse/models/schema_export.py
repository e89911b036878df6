"""JSON Schemas of the public models, exported into ``schemas/`` and checked for staleness in tests."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from salespulse.models.events import EVENT_MODELS, EventAdapter
from salespulse.families.registry import specs


#: Family -> its metric record model, built from the family's spec.
METRIC_RECORDS: dict[str, type[BaseModel]] = {name: spec.record_model for name, spec in specs().items()}


def rendered_schemas() -> dict[str, bytes]:
    """Relative path -> file content of every schema the repository ships."""
    files: dict[str, bytes] = {"events/event.json": _dump(EventAdapter.json_schema())}
    for model in EVENT_MODELS:
        event_type = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        files[f"events/{event_type}.json"] = _dump(model.model_json_schema())
    for family, record in METRIC_RECORDS.items():
        files[f"metrics/{family}.json"] = _dump(_schema(record))
    return files


def _schema(model: type[BaseModel]) -> dict:
    return model.model_json_schema()


def _dump(schema: dict) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export_schemas(out: Path) -> list[Path]:
    """Write every schema under ``out``; returns the paths written."""
    written = []
    for relative, content in rendered_schemas().items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def stale_schemas(out: Path) -> list[Path]:
    """Schema files under ``out`` that are missing or differ from the models."""
    return [out / rel for rel, content in rendered_schemas().items() if not (out / rel).is_file() or (out / rel).read_bytes() != content]
