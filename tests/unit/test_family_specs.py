"""The family specs are the single declaration: registry, docs, and every field the rules produce."""

from __future__ import annotations

import random
from pathlib import Path
from zoneinfo import ZoneInfo

from salespulse.config import Config
from salespulse.engine.dedup import DedupIndex
from salespulse.engine.processor import BatchProcessor, Record
from salespulse.engine.stores import family_context
from salespulse.families import docs, registry
from salespulse.models.events import EventAdapter, event_to_json
from salespulse.simulate import TrafficModel

FAMILIES = Path(registry.__file__).parent
NOW = 1_764_000_000.0


def test_every_family_folder_has_one_registry_line_and_every_line_a_folder() -> None:
    folders = {p.name for p in FAMILIES.iterdir() if (p / "spec.py").is_file()}
    assert folders == set(registry.NAMES)
    for name in registry.NAMES:
        assert registry.load(name).spec.name == name


def test_the_docs_tables_are_the_ones_the_specs_give() -> None:
    text = docs.DOC.read_text()
    assert docs.render(text) == text, "stale: run python -m salespulse.families.docs"


def _simulated(n: int) -> list[Record]:
    model = TrafficModel(random.Random(7), start=NOW - 3600, leads_per_minute=30.0, reps=12, teams=3, speedup=24.0)
    events: list[dict[str, object]] = []
    t = NOW - 3600
    while len(events) < n:
        t += 5.0
        events += model.due(t)
    records: list[Record] = []
    for offset, raw in enumerate(events[:n]):
        records.append((0, offset, event_to_json(EventAdapter.validate_python(raw))))
    return records


def test_every_field_the_rules_produce_is_declared_in_the_spec() -> None:
    table: dict[str, bytes] = {}
    context = family_context(table, Config(), ZoneInfo("UTC"), 35 * 86400, 300)
    families = [registry.load(name).build(context) for name in registry.NAMES]
    processor = BatchProcessor(DedupIndex(table, 3600), families, lambda record, why: None)
    processor.process(_simulated(3000), now=NOW)
    for family in families:
        produced: set[str] = set()
        for partial in family.render({0}, NOW):
            produced |= set(partial.fields)
        assert produced, family.name
        assert family.spec.undeclared({f for f in produced if not f.startswith("target:")}) == set(), family.name
        for scope in family.spec.all_time_scopes:
            for fields in family.all_time([0], scope).values():
                assert family.spec.undeclared(set(fields)) == set(), (family.name, scope)
