"""The pipeline family's typed states read the changelog's JSON as every earlier version wrote it, and write it back
unchanged (``families.pipeline.state``)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings

from salespulse.families.pipeline.state import (
    PIPELINE_CODEC,
    Churn,
    Close,
    Creation,
    Deal,
    Entry,
    Number,
    Outcome,
    PipelineLead,
    Quota,
    Stamp,
    Text,
)
from tests.unit.test_pipeline import reference_states, worlds

#: A deal as the JSON-dict version of the family persisted it (positional lists).
DEAL_JSON: dict[str, Any] = {
    "wm": 41,
    "last": 1800.0,
    "entries": [[1000.0, "e1", "sales", "new", None, None], [1500.0, "e2", "sales", "proposal", "new", 0.4]],
    "closes": [[1800.0, "e3", "sales", "won", None, 5000.0, "EUR"]],
    "created": [1000.0, "e1", "sales", "upsell"],
    "amount": [1500.0, "e2", 4000.0],
    "currency": [1000.0, "e1", "EUR"],
    "owner": [1500.0, "e2", "anna"],
    "team": [1000.0, "e1", "north"],
    "source": [1000.0, "e1", "web"],
    "probs": [[1600.0, "u1", 0.6]],
    "expected_close": [1600.0, "u1", 2000.0],
    "lead": [1000.0, "created", "L1"],
    "churned": [1900.0, "c1", None],
}
LEAD_JSON: dict[str, Any] = {
    "wm": 7,
    "last": 1200.0,
    "created": [900.0, "l1"],
    "owner": [900.0, "l1", "ben"],
    "team": [900.0, "l1", "south"],
    "source": [900.0, "l1", "ads"],
    "mql": True,
    "converted": True,
    "deals": {"D1": [1800.0, "x1", "won"], "D2": None},
}
QUOTA_JSON: dict[str, Any] = {"wm": 3, "value": [5.0, "q1", 10000.0, None, "north"]}


def test_a_deal_written_as_positional_lists_reads_as_typed_facts_and_writes_back_the_same_json() -> None:
    deal = PIPELINE_CODEC.decode("d:D1", DEAL_JSON)
    assert deal == Deal(
        wm=41, last=1800.0,
        entries=(Entry(1000.0, "e1", "sales", "new", None, None), Entry(1500.0, "e2", "sales", "proposal", "new", 0.4)),
        closes=(Close(1800.0, "e3", "sales", "won", None, 5000.0, "EUR"),),
        created=Creation(1000.0, "e1", "sales", "upsell"), amount=Number(1500.0, "e2", 4000.0),
        currency=Text(1000.0, "e1", "EUR"), owner=Text(1500.0, "e2", "anna"), team=Text(1000.0, "e1", "north"),
        source=Text(1000.0, "e1", "web"), probs=(Number(1600.0, "u1", 0.6),),
        expected_close=Number(1600.0, "u1", 2000.0), lead=Text(1000.0, "created", "L1"), churned=Churn(1900.0, "c1", None),
    )
    assert orjson.loads(orjson.dumps(PIPELINE_CODEC.encode(deal))) == DEAL_JSON


def test_a_lead_and_a_quota_read_as_typed_states_and_write_back_the_same_json() -> None:
    lead = PIPELINE_CODEC.decode("l:L1", LEAD_JSON)
    assert lead == PipelineLead(
        wm=7, last=1200.0, created=Stamp(900.0, "l1"), owner=Text(900.0, "l1", "ben"), team=Text(900.0, "l1", "south"),
        source=Text(900.0, "l1", "ads"), mql=True, converted=True, deals={"D1": Outcome(1800.0, "x1", "won"), "D2": None},
    )
    assert orjson.loads(orjson.dumps(PIPELINE_CODEC.encode(lead))) == LEAD_JSON
    quota = PIPELINE_CODEC.decode("q:anna:2026-11", QUOTA_JSON)
    assert quota == Quota(3, (5.0, "q1", 10000.0, None, "north"))
    assert orjson.loads(orjson.dumps(PIPELINE_CODEC.encode(quota))) == QUOTA_JSON


def test_new_states_are_empty_of_the_kind_their_key_names() -> None:
    assert PIPELINE_CODEC.new("d:D9") == Deal()
    assert PIPELINE_CODEC.new("l:L9") == PipelineLead()
    assert PIPELINE_CODEC.new("q:anna:2026-11") == Quota()
    assert PIPELINE_CODEC.encode(PipelineLead()) == {"wm": -1}


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_every_folded_state_survives_its_json_round_trip(world: tuple[Any, ...]) -> None:
    deals, leads = reference_states(world[0])
    for name, state in [*((f"d:{i}", d) for i, d in enumerate(deals)), *((f"l:{i}", lead) for i, lead in enumerate(leads))]:
        assert PIPELINE_CODEC.decode(name, orjson.loads(orjson.dumps(PIPELINE_CODEC.encode(state)))) == state
