"""The generic collector: structured ids round-trip, a bad id costs its one series, a failing family its own."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from salespulse.engine.cells import CellStore
from salespulse.families import keys
from salespulse.families.activity.family import ActivityFamily
from salespulse.outputs.prometheus import SkippedSeries

# Any printable part, backslashes and slashes included (control characters, "\t" among them, are refused at the edge).
part = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\\/"), max_size=8)


@given(st.lists(part, min_size=1, max_size=4), st.sampled_from(["\t", "/"]))
def test_any_parts_encode_to_an_id_that_decodes_to_the_same_parts(parts: list[str], sep: str) -> None:
    assert keys.decode(keys.encode(tuple(parts), sep), len(parts), sep) == tuple(parts)


def test_an_id_of_too_few_parts_or_with_a_control_character_does_not_decode() -> None:
    with pytest.raises(keys.MalformedId):
        keys.decode("anna", 2)
    with pytest.raises(keys.MalformedId):
        keys.decode("anna\tno\x07rth", 2)


def _activity_with(ids: list[str]) -> ActivityFamily:
    table: dict[str, bytes] = {}
    family = ActivityFamily(CellStore(table, "activity"), ZoneInfo("UTC"), 86400.0)
    family.cells.load_partition(0)
    cell = family.cells.cell(0, "all|-")
    cell["rep_team"] = {ident: {"call:connected": 2} for ident in ids}
    return family


def test_an_id_that_does_not_decode_leaves_out_its_one_series_and_is_counted() -> None:
    registry = CollectorRegistry()
    skipped = SkippedSeries(registry)
    family = _activity_with([keys.encode(("anna", "north")), "ben\tso\x00uth"])
    registry.register(family.collector(lambda: {0}, skipped=skipped))
    generate_latest(registry)
    text = generate_latest(registry).decode()  # the counter is collected before the family: the second scrape shows it
    assert 'salespulse_activities_total{kind="call",outcome="connected",rep="anna",team="north"} 2.0' in text
    assert "ben" not in text
    assert 'salespulse_metric_series_skipped_total{family="activity"} 1.0' in text  # the first scrape's


def test_a_family_whose_collection_fails_is_left_out_and_the_scrape_stands() -> None:
    registry = CollectorRegistry()
    skipped = SkippedSeries(registry)
    broken = _activity_with([keys.encode(("anna", "north"))])

    def fail(owned: list[int], scope: str, malformed: object) -> dict[object, object]:
        raise RuntimeError("a bug")

    broken.all_time_keyed = fail  # type: ignore[method-assign, assignment]
    registry.register(broken.collector(lambda: {0}, skipped=skipped))
    registry.register(_activity_with([keys.encode(("cleo", "south"))]).collector(lambda: {0}, skipped=skipped))
    generate_latest(registry)
    text = generate_latest(registry).decode()
    assert 'rep="cleo"' in text and 'rep="anna"' not in text
    assert 'salespulse_metric_series_skipped_total{family="activity"} 1.0' in text  # the first scrape's
