"""Fuzz every CRM endpoint with thousands of mutated and random bodies (correctly authenticated, so the
normalisers see them): the answer is always 2xx or 4xx, never a 500, and a request publishes all of its
events in one call or none of them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salespulse.models.events import event_from_json, event_to_json
from tests.unit.crm_http import ORG_ID, MemorySink, close_headers, crm_app, generic_headers, hubspot_headers
from tests.unit.crm_http import pipedrive_headers, serving
from tests.unit.test_crm_salesforce import OPP, outbound

EXAMPLES = 2000

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
                      st.text(max_size=20), st.sampled_from(["", "0", "won", "lost", "open", "1102", "call", "Z",
                                                             "2026-01-01 10:00:00", "2026-13-45T99:00:00Z"]))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                                   inner, max_size=4),
                          max_leaves=12)


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON document, at any depth."""
    slots: list[tuple[Any, Any]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        slots.append((doc, key))
        slots += _slots(value)
    return slots


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """The template with zero to three fields (at any depth) replaced by arbitrary JSON, or removed."""
    doc = copy.deepcopy(template)
    for _ in range(draw(st.integers(0, 3))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if isinstance(container, dict) and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(json_value)
    return doc


HS = [{"eventId": 1, "subscriptionId": 2, "portalId": 3, "occurredAt": 1767225600000, "attemptNumber": 0,
       "subscriptionType": t, "objectId": 10, "propertyName": p, "propertyValue": v, "objectTypeId": "0-3",
       "associationType": "CONTACT_TO_DEAL", "fromObjectId": 10, "toObjectId": 11}
      for t, p, v in [("contact.creation", None, None), ("deal.creation", None, None),
                      ("deal.propertyChange", "dealstage", "s1"), ("deal.propertyChange", "amount", "12"),
                      ("contact.propertyChange", "lifecyclestage", "marketingqualifiedlead"),
                      ("contact.associationChange", None, None), ("object.creation", None, None)]]
PD = {"meta": {"action": "change", "entity": "deal", "id": "u-1", "version": "2.0", "timestamp": "2026-01-01T00:00:00Z",
               "object": "deal", "timestamp_micro": 1},
      "data": {"id": 7, "status": "won", "stage_id": 3, "pipeline_id": 1, "value": 10, "currency": "EUR", "type": "call",
               "done": True, "person_id": 4, "owner_id": 5, "update_time": "2026-01-01 00:00:00", "probability": 50,
               "duration": "00:10", "lost_reason": "x"},
      "previous": {"stage_id": 2, "status": "open", "value": 5, "done": False, "owner_id": 4},
      "current": {"id": 7, "status": "open", "stage_id": 3}}
CLOSE = {"subscription_id": "w", "event": {
    "id": "ev_1", "date_created": "2026-01-01T00:00:00", "object_type": "opportunity", "action": "updated",
    "lead_id": "lead_1", "changed_fields": ["status_id", "value"],
    "data": {"id": "oppo_1", "lead_id": "lead_1", "user_id": "u", "status_id": "s", "status_type": "won",
             "value": 100, "value_currency": "USD", "confidence": 50, "disposition": "busy", "duration": 3,
             "direction": "outgoing", "status": "sent"},
    "previous_data": {"status_id": "t", "status_type": "active"}}}
CDC = {"payload": {"ChangeEventHeader": {"entityName": "Opportunity", "changeType": "UPDATE", "recordIds": ["006A"],
                                         "transactionKey": "t", "sequenceNumber": 1, "commitTimestamp": 1767225600000,
                                         "changedFields": ["StageName", "Amount", "OwnerId"]},
                   "StageName": "Closed Won", "IsClosed": True, "IsWon": True, "Amount": 5, "OwnerId": "005"}}


def json_bodies(templates: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    docs = templates.flatmap(mutated).map(orjson.dumps)
    return st.one_of(
        docs, docs, docs,
        json_value.map(orjson.dumps),
        st.binary(max_size=200),
        docs.flatmap(lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda n: b[:n])),
    )


def xml_bodies() -> st.SearchStrategy[bytes]:
    fields = st.dictionaries(st.sampled_from(sorted(OPP) + ["IsConverted", "ConvertedOpportunityId", "Bad<"]),
                             st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&"),
                                     max_size=25), max_size=8)
    notification = st.tuples(st.text(alphabet="04lABC123", max_size=20), st.sampled_from(["Opportunity", "Lead", "X"]),
                             st.one_of(fields, st.just(OPP)).map(lambda f: {**OPP, **f} if f else f))
    valid = st.lists(notification, max_size=4).map(lambda ns: outbound(*ns, org=ORG_ID))
    return st.one_of(valid, valid.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
                     st.binary(max_size=200), json_value.map(orjson.dumps))


ENDPOINTS: dict[str, tuple[str, st.SearchStrategy[bytes], Callable[[str, bytes], dict[str, str]]]] = {
    "hubspot": ("/webhooks/hubspot", json_bodies(st.lists(st.sampled_from(HS), min_size=1, max_size=6).map(
        lambda items: [{**item, "eventId": n} for n, item in enumerate(items)])), lambda url, body: hubspot_headers(url, body)),
    "pipedrive": ("/webhooks/pipedrive", json_bodies(st.just(PD)), lambda url, body: pipedrive_headers()),
    "close": ("/webhooks/close", json_bodies(st.just(CLOSE)), lambda url, body: close_headers(body)),
    "salesforce_outbound": ("/webhooks/salesforce/outbound", xml_bodies(), lambda url, body: {}),
    "salesforce_cdc": ("/webhooks/salesforce/cdc", json_bodies(st.sampled_from([[CDC], CDC, CDC["payload"]])),
                       lambda url, body: generic_headers(body)),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient, MemorySink]]:
    sink = MemorySink()
    app, _ = crm_app(sink)
    with serving(app) as (loop, client):
        yield loop, client, sink


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_fuzzed_bodies_get_2xx_or_4xx_never_500_and_nothing_half_published(endpoint: str, server) -> None:
    loop, client, sink = server
    path, bodies, headers_for = ENDPOINTS[endpoint]
    url = str(client.make_url(path))
    outcomes: dict[str, int] = {"published": 0, "dead_lettered": 0, "ignored_only": 0, "4xx": 0}

    async def post(body: bytes) -> tuple[int, Any]:
        async with client.post(path, data=body, headers=headers_for(url, body)) as response:
            return response.status, await response.read()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies)
    def check(body: bytes) -> None:
        calls, dead = len(sink.published), len(sink.dead)
        status, answer = loop.run_until_complete(post(body))
        assert 200 <= status < 500, (status, answer)
        new_calls, new_dead = sink.published[calls:], sink.dead[dead:]
        if status != 200:
            assert not new_calls and not new_dead
            outcomes["4xx"] += 1
            return
        assert len(new_calls) + len(new_dead) <= 1  # one publish of everything, or one dead letter, or nothing
        if new_dead:
            assert orjson.loads(new_dead[0])["errors"]
            outcomes["dead_lettered"] += 1
        elif new_calls:
            for event in new_calls[0]:
                assert event_from_json(event_to_json(event)) == event
            if endpoint != "salesforce_outbound":
                assert orjson.loads(answer)["accepted"] == len(new_calls[0])
            outcomes["published"] += 1
        else:
            outcomes["ignored_only"] += 1

    check()
    # The fuzz reached the normalisers' every outcome, not only the error paths.
    assert outcomes["published"] and outcomes["dead_lettered"], outcomes
