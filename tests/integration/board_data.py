"""Events for the live board's tests: leads (waiting, touched in and out of the SLA, one overdue),
calls and emails against targets, and deals across the funnel, all stamped relative to now."""

from __future__ import annotations

from typing import Any

from tests.integration.stack import now_iso

CONFIG = """
currency = "EUR"

[teams]
rep-001 = "team-north"
rep-002 = "team-north"
rep-003 = "team-south"

[rep_names]
rep-001 = "Ana Silva"
rep-002 = "Ben Okafor"

[lead_response]
sla_seconds = 300

[pipelines.default]
# Deliberately not alphabetical: the board must keep this order.
stages = ["qualification", "discovery", "proposal", "negotiation"]
won_stages = ["closed_won"]
lost_stages = ["closed_lost"]
probabilities = { qualification = 0.10, discovery = 0.25, proposal = 0.50, negotiation = 0.75 }

[targets.default]
day = { call = 10, email_sent = 5 }
"""

STAGE_ORDER = ["qualification", "discovery", "proposal", "negotiation"]


def lead(event_id: str, lead_id: str, rep: str, team: str, age_s: float, source: str = "web") -> dict[str, Any]:
    return {"event_id": event_id, "type": "lead.created", "occurred_at": now_iso(-age_s), "lead_id": lead_id,
            "rep_id": rep, "team": team, "source": source}


def call(event_id: str, lead_id: str, rep: str, team: str, age_s: float = 0.0) -> dict[str, Any]:
    return {"event_id": event_id, "type": "call.logged", "occurred_at": now_iso(-age_s), "lead_id": lead_id,
            "rep_id": rep, "team": team, "outcome": "connected"}


def deal(event_id: str, deal_id: str, rep: str, stage: str, amount: float) -> dict[str, Any]:
    return {"event_id": event_id, "type": "deal.created", "occurred_at": now_iso(), "deal_id": deal_id,
            "rep_id": rep, "team": "team-north", "pipeline": "default", "stage": stage, "amount": amount,
            "currency": "EUR"}


def seed_events(tag: str) -> list[dict[str, Any]]:
    """The first batch: two waiting leads (one past its deadline, so it alerts), two touched leads."""
    return [
        lead(f"{tag}-l1", f"{tag}-lead-wait", "rep-001", "team-north", age_s=60),
        lead(f"{tag}-l2", f"{tag}-lead-late", "rep-002", "team-north", age_s=400),  # deadline passed: alerts
        lead(f"{tag}-l3", f"{tag}-lead-fast", "rep-001", "team-north", age_s=200),
        call(f"{tag}-c3", f"{tag}-lead-fast", "rep-001", "team-north", age_s=140),  # answered in 60 s
        lead(f"{tag}-l4", f"{tag}-lead-slow", "rep-003", "team-south", age_s=1000, source="fair"),
        call(f"{tag}-c4", f"{tag}-lead-slow", "rep-003", "team-south", age_s=100),  # answered in 900 s
        call(f"{tag}-c5", f"{tag}-lead-x", "rep-001", "team-north"),
        {"event_id": f"{tag}-e1", "type": "email.sent", "occurred_at": now_iso(), "lead_id": f"{tag}-lead-x",
         "rep_id": "rep-002", "team": "team-north", "email_id": f"{tag}-mail-1"},
        deal(f"{tag}-d1", f"{tag}-deal-1", "rep-001", "qualification", 10000),
        deal(f"{tag}-d2", f"{tag}-deal-2", "rep-001", "proposal", 20000),
        deal(f"{tag}-d3", f"{tag}-deal-3", "rep-002", "negotiation", 40000),
        {"event_id": f"{tag}-q1", "type": "quota.set", "occurred_at": now_iso(), "rep_id": "rep-001",
         "period": now_iso()[:7], "amount": 100000, "currency": "EUR"},
    ]
