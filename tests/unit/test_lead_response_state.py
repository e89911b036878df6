"""The lead-response family's typed lead reads the changelog's JSON as the earlier version wrote it, and writes
it back unchanged (``families.lead_response.state``)."""

from __future__ import annotations

from typing import Any

import orjson

from salespulse.families.lead_response.state import LEAD_CODEC, SLA_RULE, WARNING_RULE, Episode, Lead

#: A lead as the JSON-dict version of the family persisted it: touched after its breach fired.
BREACHED_JSON: dict[str, Any] = {
    "wm": 12, "created": 1000.0, "deadline": 1300.0, "hours_team": "north", "live": True, "touch": 1400.0,
    "toucher": "ben", "owners": [[1000.0, "anna"], [1100.0, "ben"]], "owner": "ben", "touch_owner": "ben",
    "team": "north", "team_from": "created", "source": "ads", "mql": False, "response_s": 400.0, "warn_at": 1240.0,
    "alert": "resolved", "fired_at": 1300.5, "resolved_at": 1400.2,
    "warning": "resolved", "warned_at": 1240.1, "warning_resolved_at": 1300.5,
    "as_fired": ["anna", "north", "ads"], "published": ["a", "b"],
}


def test_a_breached_lead_written_as_json_reads_as_typed_episodes_and_writes_back_the_same_json() -> None:
    lead = LEAD_CODEC.decode("L1", BREACHED_JSON)
    assert lead.owners == ((1000.0, "anna"), (1100.0, "ben")) and lead.mql is False
    assert lead.episode(SLA_RULE) == Episode(1300.5, 1400.2)
    assert lead.episode(WARNING_RULE) == Episode(1240.1, 1300.5)
    assert lead.as_fired == ("anna", "north", "ads") and lead.published == ("a", "b")
    assert orjson.loads(orjson.dumps(LEAD_CODEC.encode(lead))) == BREACHED_JSON


def test_a_firing_alert_has_no_resolution_in_either_form() -> None:
    raw = {"wm": 3, "created": 1000.0, "deadline": 1300.0, "live": True, "alert": "firing", "fired_at": 1301.0}
    lead = LEAD_CODEC.decode("L2", raw)
    assert lead.breach == Episode(1301.0) and lead.breach.status == "firing" and lead.warning is None
    assert LEAD_CODEC.encode(lead) == raw


def test_an_assignment_is_kept_once_and_in_time_order() -> None:
    lead = Lead()
    for at, rep in ((20.0, "ben"), (10.0, "anna"), (20.0, "ben")):
        lead.assign(at, rep)
    assert lead.owners == ((10.0, "anna"), (20.0, "ben"))
    assert LEAD_CODEC.encode(lead) == {"wm": -1, "owners": [[10.0, "anna"], [20.0, "ben"]]}
