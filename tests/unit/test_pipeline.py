"""The pipeline family: seed examples, deal state rules, follow-up links, and streaming = batch under crashes.

Workers run over a plain dict standing for the changelogged table, with an explicit ``now``. Events
are routed to partitions by their Kafka key; follow-up events a batch produces are appended to their
target partition's log before the batch's state is persisted, as ``WorkerRuntime`` does. A crash keeps
any prefix of the batch's table writes and restarts from the last committed offsets.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salespulse.families.pipeline.formulas import (
    leads_needed,
    pipeline_coverage,
    quota_attainment,
    quota_gap,
    sales_productivity,
    share_at_quota,
    step_conversions,
    weighted_amount,
    win_rate,
)
from salespulse.families.pipeline.pipelines import PipelineSpec, Pipelines
from salespulse.families.pipeline.rules import deal_contribution, lead_contribution
from salespulse.families.pipeline.spec import derived_fields
from salespulse.models.events import EventAdapter, event_to_json
from salespulse.engine.cells import CellStore
from salespulse.engine.dedup import DedupIndex
from salespulse.families.pipeline.family import PipelineFamily
from salespulse.families.pipeline.state import PIPELINE_CODEC, Deal, Outcome, PipelineLead
from salespulse.engine.processor import BatchProcessor, Record
from salespulse.engine.record_log import RecordLog
from tests.unit.log_support import RecordingTable

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc).timestamp()
DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0
PARTITIONS = 3
SALES = PipelineSpec(
    stages=("new", "meeting", "proposal", "negotiation"),
    won_stages=("closed_won",),
    lost_stages=("closed_lost",),
    probabilities={"new": 0.05, "meeting": 0.12, "proposal": 0.5, "negotiation": 0.83},
)
PIPELINES = Pipelines({"sales": SALES})
TEAMS = {"anna": "north", "ben": "north", "cleo": "south"}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


# --- event builders ---------------------------------------------------------------------------------------------

_n = iter(range(10**9))


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_n)}"


def created(deal: str, at: float, stage: str = "new", amount: float | None = 1000.0, rep: str = "anna",
            lead: str | None = None, eid: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"event_id": eid or _id("c"), "type": "deal.created", "occurred_at": iso(at), "deal_id": deal,
             "pipeline": "sales", "stage": stage, "rep_id": rep, "currency": "USD"}
    if amount is not None:
        event["amount"] = amount
    if lead is not None:
        event["lead_id"] = lead
    return event | extra


def moved(deal: str, at: float, to: str, frm: str | None = None, eid: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"event_id": eid or _id("s"), "type": "deal.stage_changed", "occurred_at": iso(at), "deal_id": deal,
             "pipeline": "sales", "to_stage": to}
    if frm is not None:
        event["from_stage"] = frm
    return event | extra


def won(deal: str, at: float, amount: float | None = None, eid: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"event_id": eid or _id("w"), "type": "deal.won", "occurred_at": iso(at), "deal_id": deal,
             "pipeline": "sales"}
    if amount is not None:
        event["amount"] = amount
    return event | extra


def lost(deal: str, at: float, reason: str | None = "Price", eid: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"event_id": eid or _id("l"), "type": "deal.lost", "occurred_at": iso(at), "deal_id": deal,
             "pipeline": "sales"}
    if reason is not None:
        event["reason"] = reason
    return event | extra


def lead(lead_id: str, at: float, rep: str = "anna", source: str = "ads", mql: bool | None = None,
         eid: str | None = None) -> dict[str, Any]:
    event = {"event_id": eid or _id("lc"), "type": "lead.created", "occurred_at": iso(at), "lead_id": lead_id,
             "rep_id": rep, "source": source}
    if mql is not None:
        event["mql"] = mql
    return event


def converted(lead_id: str, deal: str, at: float, eid: str | None = None) -> dict[str, Any]:
    return {"event_id": eid or _id("cv"), "type": "lead.converted", "occurred_at": iso(at), "lead_id": lead_id,
            "deal_id": deal}


def quota(rep: str, period: str, amount: float, at: float = NOW - DAY, eid: str | None = None) -> dict[str, Any]:
    return {"event_id": eid or _id("q"), "type": "quota.set", "occurred_at": iso(at), "rep_id": rep,
            "period": period, "amount": amount, "currency": "USD"}


def key_of(event: Mapping[str, Any]) -> str:
    return EventAdapter.validate_python(event).partition_key


# --- a worker over a dict table, with follow-ups routed back ----------------------------------------------------


class Worker:
    """Dedup + pipeline family + processor over a table, as ``WorkerRuntime`` builds them."""

    def __init__(
        self, table: dict[str, bytes] | None = None, pipelines: Pipelines = PIPELINES, tz: ZoneInfo = UTC,
        decoded_limit: int | None = None,
    ) -> None:
        self.table: dict[str, bytes] = RecordingTable() if table is None else table
        self.dead: list[tuple[Record, str]] = []
        self.family = PipelineFamily(
            CellStore(self.table, "pipeline"), RecordLog(self.table, "pstate", PIPELINE_CODEC, decoded_limit), tz, 35 * DAY,
            pipelines=pipelines, currency="USD", team_of_rep=TEAMS,
        )
        self.processor = BatchProcessor(
            DedupIndex(self.table, 72 * HOUR), [self.family], lambda r, why: self.dead.append((r, why))
        )


class Cluster:
    """Partition logs plus one worker; ``send`` appends events by key, ``drain`` processes everything."""

    def __init__(self, pipelines: Pipelines = PIPELINES, tz: ZoneInfo = UTC, decoded_limit: int | None = None) -> None:
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        self.committed = {p: 0 for p in range(PARTITIONS)}
        self.pipelines = pipelines
        self.tz = tz
        self.decoded_limit = decoded_limit
        self.worker = Worker(pipelines=pipelines, tz=tz, decoded_limit=decoded_limit)

    def append(self, raw: bytes, key: str) -> None:
        self.logs[partition_of(key)].append(raw)

    def send(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.append(orjson.dumps(event), key_of(event))

    def step(self, partition: int, size: int, now: float, crash: random.Random | None = None) -> None:
        start = self.committed[partition]
        batch: list[Record] = [(partition, start + i, raw)
                               for i, raw in enumerate(self.logs[partition][start:start + size])]
        if not batch:
            return
        table = self.worker.table
        before = dict(table)
        if isinstance(table, RecordingTable):
            table.log.clear()
        staged = self.worker.processor.stage(batch, now)
        for event in staged.stats.follow_ups:  # delivered (and acked) before the state is written
            self.append(event_to_json(event), event.partition_key)
        self.worker.processor.persist(staged)
        assert not self.worker.dead, self.worker.dead
        if crash is not None:
            assert isinstance(table, RecordingTable)
            landed = before
            for key, value in table.log[: crash.randint(0, len(table.log))]:
                if value is None:
                    landed.pop(key, None)
                else:
                    landed[key] = value
            self.worker = Worker(RecordingTable(landed), self.pipelines, self.tz, self.decoded_limit)  # restart from the last commit
            return
        self.committed[partition] += len(batch)

    def pending(self) -> list[int]:
        return [p for p in range(PARTITIONS) if self.committed[p] < len(self.logs[p])]

    def drain(self, now: float = NOW) -> "Cluster":
        while self.pending():
            for p in self.pending():
                self.step(p, 1000, now)
        for p in range(PARTITIONS):
            self.worker.processor.ensure_loaded(p)
        return self

    @property
    def family(self) -> PipelineFamily:
        return self.worker.family

    def fields(self, scope: str, ident: str, window: str = "all|-") -> dict[str, float]:
        """Fields of one id in one window, summed over partitions, with derived fields."""
        total: dict[str, float] = {}
        for p in range(PARTITIONS):
            cell = self.family.cells.get(p, window)
            for name, value in (cell or {}).get(scope, {}).get(ident, {}).items():
                total[name] = total.get(name, 0) + value
        total = {k: v for k, v in total.items() if abs(v) > 1e-9}
        return total | derived_fields(total, self.pipelines, ["USD"])

    def open(self, scope: str, ident: str) -> dict[str, float]:
        return self.family.open_totals(range(PARTITIONS), scope).get(ident, {})


# --- the seed examples ------------------------------------------------------------------------------------------


def test_seed_5_won_25_lost_is_a_win_rate_of_5_of_30_pure() -> None:
    assert win_rate(5, 25) == pytest.approx(5 / 30)
    assert win_rate(0, 0) is None


def test_seed_5_won_25_lost_in_a_month_is_a_win_rate_of_5_of_30_in_the_stream() -> None:
    at = NOW - 3 * DAY
    events = [created(f"D{i}", at - DAY) for i in range(30)]
    events += [won(f"D{i}", at + i) for i in range(5)] + [lost(f"D{i}", at + i) for i in range(5, 30)]
    cluster = Cluster()
    cluster.send(events)
    month = cluster.drain().fields("pipeline", "sales", "month|2026-11")
    assert (month["won"], month["lost"]) == (5, 25)
    assert month["win_rate"] == pytest.approx(5 / 30)
    assert month["lost_reason:price"] == 25


def test_seed_weighted_pipeline_27600_at_12_percent_and_34500_at_83_percent_pure() -> None:
    assert weighted_amount(27_600, 0.12) == pytest.approx(3_312)
    assert weighted_amount(34_500, 0.83) == pytest.approx(28_635)


def test_seed_weighted_pipeline_in_the_stream_uses_own_probability_else_the_stage_default() -> None:
    cluster = Cluster()
    cluster.send([
        created("D1", NOW - DAY, stage="new", amount=27_600, probability=0.12),  # its own probability
        created("D2", NOW - DAY, stage="new", amount=34_500),
        moved("D2", NOW - HOUR, "negotiation"),  # no probability: the stage default, 0.83
    ])
    opened = cluster.drain().open("pipeline", "sales")
    assert opened["weighted:USD"] == pytest.approx(3_312 + 28_635)
    assert opened["amount:USD"] == 27_600 + 34_500
    assert (opened["deals:new"], opened["deals:negotiation"]) == (1, 1)


def test_seed_funnel_40_then_50_percent_and_5_percent_end_up_buying() -> None:
    assert step_conversions([100, 40, 20, 5]) == [pytest.approx(0.4), pytest.approx(0.5), pytest.approx(0.25)]
    cluster = Cluster()
    events = []
    for i in range(100):
        events.append(created(f"D{i}", NOW - 5 * DAY + i))
        if i < 40:
            events.append(moved(f"D{i}", NOW - 4 * DAY + i, "meeting"))
        if i < 20:
            events.append(moved(f"D{i}", NOW - 3 * DAY + i, "proposal"))
        if i < 5:
            events.append(won(f"D{i}", NOW - 2 * DAY + i))
    cluster.send(events)
    fields = cluster.drain().fields("pipeline", "sales")
    assert fields["conversion:new>meeting"] == pytest.approx(0.40)
    assert fields["conversion:meeting>proposal"] == pytest.approx(0.50)
    assert fields["won"] / fields["entries:new"] == pytest.approx(0.05)
    assert fields["transition:new>meeting"] == 40  # from_stage filled from the deal's state


def test_seed_leads_needed_100000_quota_5000_deals_10_percent_is_200_pure() -> None:
    assert leads_needed(100_000, 5_000, 0.10) == pytest.approx(200)
    assert leads_needed(100_000, 0, 0.10) is None


def test_seed_leads_needed_in_the_stream_from_quota_average_deal_and_lead_to_customer() -> None:
    cluster = Cluster()
    events: list[dict[str, Any]] = [quota("anna", "2026-11", 100_000)]
    for i in range(100):
        events.append(lead(f"L{i}", NOW - 10 * DAY + i))
        if i < 10:  # 10 of 100 leads become customers, each with a $5,000 deal
            events += [converted(f"L{i}", f"D{i}", NOW - 9 * DAY), created(f"D{i}", NOW - 9 * DAY, amount=5_000),
                       won(f"D{i}", NOW - 8 * DAY)]
    cluster.send(events)
    fields = cluster.drain().fields("rep", "anna", "month|2026-11")
    assert fields["avg_deal_size:USD"] == 5_000
    assert fields["lead_to_customer"] == pytest.approx(0.10)
    assert fields["quota:USD"] == 100_000
    assert fields["leads_needed:USD"] == pytest.approx(200)
    assert fields["quota_attainment:USD"] == pytest.approx(0.5)
    assert fields["quota_gap:USD"] == 50_000


def test_quota_formulas_pure() -> None:
    assert quota_attainment(50_000, 100_000) == 0.5
    assert quota_gap(100_000, 50_000) == 50_000
    assert pipeline_coverage(150_000, 100_000, 50_000) == 3
    assert pipeline_coverage(1, 100, 100) is None
    assert share_at_quota([1.2, 0.5, 1.0, 0.1]) == 0.5
    assert sales_productivity(300_000, 3) == 100_000


# --- deal state rules -------------------------------------------------------------------------------------------


def test_a_late_older_stage_change_counts_in_its_own_window_and_does_not_rewind_the_stage() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY), moved("D1", NOW - HOUR, "proposal")])
    cluster.drain()
    cluster.send([moved("D1", NOW - 2 * DAY, "meeting")])  # happened earlier, arrives last
    cluster.drain()
    assert cluster.open("pipeline", "sales")["deals:proposal"] == 1
    assert "deals:meeting" not in cluster.open("pipeline", "sales")
    assert cluster.fields("pipeline", "sales", "day|2026-11-20")["entries:meeting"] == 1
    transitions = cluster.fields("pipeline", "sales")
    # the history is now new -> meeting -> proposal: the late change rewrites the inferred from_stage
    assert transitions["transition:new>meeting"] == 1 and transitions["transition:meeting>proposal"] == 1
    assert "transition:new>proposal" not in transitions
    stage = cluster.fields("stage", "sales/meeting")
    assert stage["tis_count"] == 1 and stage["tis_sum_s"] == pytest.approx(2 * DAY - HOUR)


def test_explicit_from_stage_is_kept_and_direction_follows_the_configured_order() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY, stage="proposal"), moved("D1", NOW - DAY, "meeting", frm="proposal")])
    cluster.drain()
    assert cluster.fields("pipeline", "sales")["transition:proposal>meeting"] == 1
    assert PIPELINES.direction("sales", "proposal", "meeting") == "backward"
    assert PIPELINES.direction("sales", "meeting", "proposal") == "forward"


def test_unknown_stage_is_accepted_logged_once_and_ranked_after_the_known_ones(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY), moved("D1", NOW - 2 * DAY, "security_review"),
                  created("D2", NOW - DAY, stage="security_review")])
    with caplog.at_level("WARNING"):
        cluster.drain()
        other = Cluster()  # another worker in the same process: already reported
        other.send([created("D3", NOW - DAY, stage="security_review")])
        other.drain()
    assert sum("security_review" in r.getMessage() for r in caplog.records) == 1
    assert cluster.open("pipeline", "sales")["deals:security_review"] == 2
    assert PIPELINES.rank("sales", "a_unknown") < PIPELINES.rank("sales", "b_unknown")


def test_direction_is_unknown_when_no_order_places_both_stages() -> None:
    # security_review is in no configured order: a move to or from it is neither forward nor backward.
    assert PIPELINES.direction("sales", "closed_lost", "security_review") == "unknown"
    assert PIPELINES.direction("sales", "security_review", "negotiation") == "unknown"
    # a pipeline nothing orders: never judged by the stage names (qualified < proposal alphabetically)
    assert PIPELINES.direction("smb", "qualified", "proposal") == "unknown"
    assert PIPELINES.direction("smb", "proposal", "qualified") == "unknown"


def test_a_reopened_deal_moves_backward_from_its_outcome() -> None:
    assert PIPELINES.direction("sales", "won", "proposal") == "backward"
    assert PIPELINES.direction("sales", "lost", "meeting") == "backward"


def test_won_without_amount_takes_the_deals_last_known_amount() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY, amount=1_000), moved("D1", NOW - 2 * DAY, "proposal", amount=1_500),
                  won("D1", NOW - DAY)])
    fields = cluster.drain().fields("rep", "anna")
    assert fields["won_amount:USD"] == 1_500
    assert fields["cycle_count"] == 1 and fields["avg_cycle_s"] == pytest.approx(2 * DAY)


def test_entering_a_won_stage_closes_the_deal_once_even_with_a_deal_won_event_too() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY, amount=800), moved("D1", NOW - DAY, "closed_won"),
                  won("D1", NOW - DAY + 1, amount=900)])
    fields = cluster.drain().fields("pipeline", "sales")
    assert fields["won"] == 1 and fields["won_amount:USD"] == 900 and "lost" not in fields
    assert cluster.open("pipeline", "sales") == {}


def test_loss_reasons_are_normalised_and_unknown_ones_count_as_other() -> None:
    cluster = Cluster()
    cluster.send([lost("D1", NOW - DAY, "  PRICE "), lost("D2", NOW - DAY, "Competitor"),
                  lost("D3", NOW - DAY, "customer's CEO is john.doe@example.com"), lost("D4", NOW - DAY, None)])
    fields = cluster.drain().fields("pipeline", "sales")
    reasons = {k: v for k, v in fields.items() if k.startswith("lost_reason:")}
    assert reasons == {"lost_reason:price": 1, "lost_reason:competitor": 1, "lost_reason:other": 1,
                       "lost_reason:unspecified": 1}


def test_a_reopened_deal_counts_as_its_final_outcome_only() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY), lost("D1", NOW - 2 * DAY), moved("D1", NOW - DAY, "proposal"),
                  won("D1", NOW - HOUR, amount=2_000)])
    fields = cluster.drain().fields("pipeline", "sales")
    assert fields["won"] == 1 and "lost" not in fields
    assert fields["transition:lost>proposal"] == 1


def test_a_deal_entering_a_stage_after_a_close_counts_as_reopened_once_in_the_window_of_that_entry() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - 3 * DAY), lost("D1", NOW - 2 * DAY), moved("D1", NOW - DAY, "proposal"),
                  won("D1", NOW - HOUR, amount=2_000), created("D2", NOW - 3 * DAY), lost("D2", NOW - 2 * DAY)])
    cluster.drain()
    assert cluster.fields("pipeline", "sales")["reopened"] == 1
    assert cluster.fields("rep", "anna", f"day|{datetime.fromtimestamp(NOW - DAY, timezone.utc).date()}")["reopened"] == 1
    assert "reopened" not in cluster.fields("rep", "anna", f"day|{datetime.fromtimestamp(NOW - 2 * DAY, timezone.utc).date()}")


def test_upsell_share_close_rate_and_churn_within_the_first_year() -> None:
    cluster = Cluster()
    cluster.send([
        created("D1", NOW - 5 * DAY, kind="upsell"), won("D1", NOW - 4 * DAY),
        created("D2", NOW - 5 * DAY), won("D2", NOW - 4 * DAY),
        created("D3", NOW - 5 * DAY), lost("D3", NOW - 4 * DAY),
        created("D4", NOW - 5 * DAY),
        {"event_id": "ch1", "type": "customer.churned", "occurred_at": iso(NOW - DAY), "deal_id": "D1"},
    ])
    fields = cluster.drain().fields("rep", "anna")
    assert fields["upsell_share"] == 0.5
    assert fields["close_rate"] == 0.5  # 2 of the 4 deals created are won
    assert fields["churned"] == 1 and fields["churned_first_year"] == 1
    assert fields["created_to_lost"] == 4


def test_deal_updated_moves_owner_probability_and_expected_close_for_coverage() -> None:
    cluster = Cluster()
    cluster.send([
        quota("ben", "2026-12", 10_000),
        created("D1", NOW - 3 * DAY, amount=5_000, stage="proposal"),
        {"event_id": "u1", "type": "deal.updated", "occurred_at": iso(NOW - DAY), "deal_id": "D1", "rep_id": "ben",
         "probability": 0.3, "expected_close": "2026-12-15T12:00:00+00:00"},
    ])
    cluster.drain()
    assert cluster.open("rep", "ben")["weighted:USD"] == pytest.approx(1_500)
    assert "anna" not in cluster.family.open_totals(range(PARTITIONS), "rep")
    december = cluster.fields("rep", "ben", "month|2026-12")
    assert december["open_closing:USD"] == 5_000 and december["pipeline_coverage:USD"] == 0.5


# --- leads and follow-ups ---------------------------------------------------------------------------------------


def test_lead_converted_links_the_deal_and_the_close_comes_back_to_the_lead() -> None:
    cluster = Cluster()
    cluster.send([lead("L1", NOW - 5 * DAY, mql=True), converted("L1", "D1", NOW - 4 * DAY),
                  created("D1", NOW - 4 * DAY), won("D1", NOW - DAY, amount=3_000)])
    cluster.drain()
    fields = cluster.fields("source", "ads")
    assert (fields["leads"], fields["opportunities"], fields["customers"], fields["mql_customers"]) == (1, 1, 1, 1)
    assert fields["lead_to_opportunity"] == 1 and fields["mql_to_customer"] == 1
    types = [orjson.loads(raw)["event_id"] for log in cluster.logs.values() for raw in log]
    assert "link:D1:L1" in types and f"closed:D1:L1:won:{round((NOW - DAY) * 1000)}" in types


def test_a_deal_won_again_after_a_correction_to_lost_makes_its_lead_a_customer_again() -> None:
    cluster = Cluster()
    cluster.send([lead("L1", NOW - 5 * DAY), created("D1", NOW - 4 * DAY, lead="L1")])
    cluster.drain()
    for close in (won("D1", NOW - 3 * DAY, amount=3_000), lost("D1", NOW - 2 * DAY), won("D1", NOW - DAY)):
        cluster.send([close])
        cluster.drain()
    assert cluster.fields("source", "ads")["customers"] == 1


def test_follow_up_ids_of_very_long_deal_and_lead_ids_stay_valid_and_fixed() -> None:
    deal_id, lead_id = "D" * 128, "L" * 128
    cluster = Cluster()
    cluster.send([lead(lead_id, NOW - 5 * DAY), converted(lead_id, deal_id, NOW - 4 * DAY),
                  created(deal_id, NOW - 4 * DAY), won(deal_id, NOW - DAY, amount=3_000)])
    cluster.drain()
    assert cluster.fields("source", "ads")["customers"] == 1
    ids = [orjson.loads(raw)["event_id"] for log in cluster.logs.values() for raw in log]
    assert any(i.startswith("closed:sha256:") for i in ids) and all(len(i) <= 128 for i in ids)


def test_deal_created_with_lead_id_tells_the_lead_it_converted_and_the_close_arriving_first_still_counts() -> None:
    cluster = Cluster()
    cluster.send([won("D1", NOW - DAY, amount=3_000), lead("L1", NOW - 5 * DAY, mql=False)])
    cluster.drain()
    assert "customers" not in cluster.fields("rep", "anna")  # the deal does not know its lead yet
    cluster.send([created("D1", NOW - 4 * DAY, lead="L1")])
    cluster.drain()
    fields = cluster.fields("rep", "anna")
    assert (fields["leads"], fields["opportunities"], fields["customers"]) == (1, 1, 1)
    assert "mql_customers" not in fields
    cluster.send([{"event_id": "q1", "type": "lead.qualified", "occurred_at": iso(NOW - 4 * DAY), "lead_id": "L1"}])
    assert cluster.drain().fields("rep", "anna")["mql_customers"] == 1


def test_redelivered_events_and_replayed_follow_ups_count_once() -> None:
    events = [lead("L1", NOW - 5 * DAY, eid="a"), converted("L1", "D1", NOW - 4 * DAY, eid="b"),
              created("D1", NOW - 4 * DAY, eid="c"), won("D1", NOW - DAY, amount=3_000, eid="d")]
    cluster = Cluster()
    cluster.send(events + events)
    cluster.drain()
    cluster.send(events)
    fields = cluster.drain().fields("rep", "anna")
    assert (fields["leads"], fields["customers"], fields["won"], fields["deals_created"]) == (1, 1, 1, 1)


# --- publishing -------------------------------------------------------------------------------------------------


def test_render_publishes_windows_and_open_gauges_with_partition_watermarks() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - HOUR, amount=100), lost("D2", NOW - HOUR)])
    cluster.drain()
    owned = set(range(PARTITIONS))
    partials = {(p.redis_key, p.partition): p for p in cluster.family.render(owned, NOW)}
    opened = partials[("salespulse:pipeline:open:pipeline:sales", partition_of("D1"))]
    assert opened.fields["deals"] == 1 and opened.ttl_s == 0 and opened.record["window"] == "now"
    assert opened.watermark == cluster.family.partition_wm[partition_of("D1")]
    day = partials[("salespulse:pipeline:pipeline:sales:day:2026-11-22", partition_of("D1"))]
    assert day.fields["entries:new"] == 1
    lost_day = partials[("salespulse:pipeline:pipeline:sales:day:2026-11-22", partition_of("D2"))]
    assert lost_day.fields["lost"] == 1
    assert not any(":transition:" in key or ":pipeline_rep:" in key for key, _ in partials)
    assert cluster.family.render(owned, NOW) == []  # nothing dirty any more


def test_open_gauges_are_rebuilt_from_the_deal_states_after_a_restart() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - HOUR, amount=100), created("D2", NOW - HOUR, amount=50, stage="proposal")])
    cluster.drain()
    before = cluster.family.open_totals(range(PARTITIONS), "gauge")
    restarted = Worker(RecordingTable(cluster.worker.table))
    for p in range(PARTITIONS):
        restarted.processor.ensure_loaded(p)
    assert restarted.family.open_totals(range(PARTITIONS), "gauge") == before
    assert sum(f["amount"] for f in before.values()) == 150


def test_a_restart_decodes_the_deal_states_and_leaves_the_lead_states_encoded() -> None:
    cluster = Cluster()
    cluster.send([created("D1", NOW - HOUR), lead("L1", NOW - HOUR), lead("L2", NOW - HOUR)])
    cluster.drain()
    restarted = Worker(RecordingTable(cluster.worker.table))
    for p in range(PARTITIONS):
        restarted.processor.ensure_loaded(p)
    decoded = {name for p in range(PARTITIONS) for name in restarted.family.states.loaded(p)}
    assert decoded == {"d:D1"}
    kept = {name for p in range(PARTITIONS) for name, _newest, _watch in restarted.family.states.indexed(p)}
    assert kept == {"d:D1", "l:L1", "l:L2"}


# --- the property: any history, any order Kafka allows, redeliveries, crashes, follow-ups routed back ----------

REPS = ["anna", "ben", "cleo"]
STAGES = ["new", "meeting", "proposal", "negotiation", "legal_review"]


@st.composite
def deal_history(draw: st.DrawFn, number: int, leads: int) -> list[dict[str, Any]]:
    """One deal's events; closes happen last in event time (a reopen after a close is tested apart)."""
    deal = f"D{number}"
    t0 = NOW - draw(st.integers(2 * 24 * 60, 20 * 24 * 60)) * MINUTE
    events: list[dict[str, Any]] = []
    link = f"L{draw(st.integers(0, leads - 1))}" if leads and draw(st.booleans()) else None
    if draw(st.integers(0, 9)) > 0:
        events.append(created(deal, t0, stage=draw(st.sampled_from(STAGES)),
                              amount=draw(st.none() | st.sampled_from([500.0, 1_000.0, 2_500.0])),
                              rep=draw(st.sampled_from(REPS)), lead=link if draw(st.booleans()) else None,
                              eid=f"{deal}-c", kind=draw(st.sampled_from(["new", "upsell", "cross_sell"]))))
    last = t0
    for i in range(draw(st.integers(0, 4))):
        at = t0 + draw(st.integers(0, 40 * 60)) * MINUTE
        last = max(last, at)
        extra: dict[str, Any] = {}
        if draw(st.booleans()):
            extra["amount"] = draw(st.sampled_from([700.0, 1_200.0]))
        if draw(st.booleans()):
            extra["probability"] = draw(st.sampled_from([0.2, 0.6]))
        events.append(moved(deal, at, draw(st.sampled_from(STAGES)),
                            frm=draw(st.none() | st.sampled_from(STAGES)), eid=f"{deal}-s{i}", **extra))
    if draw(st.booleans()):
        at = t0 + draw(st.integers(0, 40 * 60)) * MINUTE
        events.append({"event_id": f"{deal}-u", "type": "deal.updated", "occurred_at": iso(at), "deal_id": deal,
                       "rep_id": draw(st.sampled_from(REPS)), "probability": draw(st.sampled_from([0.1, 0.9]))})
    for i in range(draw(st.integers(0, 2))):
        at = last + draw(st.integers(1, 600)) * MINUTE
        if draw(st.booleans()):
            events.append(won(deal, at, amount=draw(st.none() | st.just(999.0)), eid=f"{deal}-w{i}"))
        else:
            events.append(lost(deal, at, reason=draw(st.sampled_from(["price", "Weird reason", None])), eid=f"{deal}-l{i}"))
    if link is not None and draw(st.booleans()):
        events.append(converted(link, deal, t0 + draw(st.integers(-60, 60)) * MINUTE, eid=f"{deal}-cv"))
    return events


@st.composite
def lead_events(draw: st.DrawFn, number: int) -> list[dict[str, Any]]:
    lead_id = f"L{number}"
    t0 = NOW - draw(st.integers(2 * 24 * 60, 20 * 24 * 60)) * MINUTE
    events = []
    if draw(st.integers(0, 9)) > 0:
        events.append(lead(lead_id, t0, rep=draw(st.sampled_from(REPS)), source=draw(st.sampled_from(["ads", "web"])),
                           mql=draw(st.none() | st.booleans()), eid=f"{lead_id}-c"))
    if draw(st.booleans()):
        events.append({"event_id": f"{lead_id}-a", "type": "lead.assigned", "occurred_at": iso(t0 + HOUR),
                       "lead_id": lead_id, "rep_id": draw(st.sampled_from(REPS))})
    if draw(st.booleans()):
        events.append({"event_id": f"{lead_id}-q", "type": "lead.qualified", "occurred_at": iso(t0 + DAY),
                       "lead_id": lead_id})
    return events


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], random.Random]:
    """Distinct events, and the order they are appended in: any order per key, redeliveries included."""
    leads = draw(st.integers(0, 4))
    distinct: list[dict[str, Any]] = []
    for n in range(leads):
        distinct += draw(lead_events(n))
    for n in range(draw(st.integers(1, 6))):
        distinct += draw(deal_history(n, leads))
    for rep in draw(st.lists(st.sampled_from(REPS), max_size=2)):
        distinct.append(quota(rep, "2026-11", draw(st.sampled_from([1_000.0, 5_000.0])),  # distinct times: no ties
                              at=NOW - draw(st.integers(1, 5)) * DAY + len(distinct), eid=f"q-{rep}-{len(distinct)}"))
    rnd = draw(st.randoms(use_true_random=False))
    arrivals = list(distinct)
    rnd.shuffle(arrivals)  # webhooks arrive in any order; a key's log keeps the order they arrived in
    for _ in range(rnd.randint(0, 3) if distinct else 0):
        again = rnd.choice(distinct)
        arrivals.insert(rnd.randint(arrivals.index(again) + 1, len(arrivals)), again)
    return distinct, arrivals, rnd


def reference_states(distinct: Sequence[dict[str, Any]]) -> tuple[list[Deal], list[PipelineLead]]:
    """Final deal and lead states by a plain fold of the distinct events in event-time order (no stream code)."""
    from salespulse.families.pipeline.fold import record_deal_event as _record_deal_event, record_lead_event as _record_lead_event

    ordered = sorted((EventAdapter.validate_python(e) for e in distinct),
                     key=lambda e: (e.occurred_at.timestamp(), e.event_id))
    deals: dict[str, Deal] = {}
    leads: dict[str, PipelineLead] = {}
    links: dict[str, str] = {}
    for event in ordered:
        if event.type == "lead.converted":
            if not any(e.type == "deal.created" and e.deal_id == event.deal_id and e.lead_id for e in ordered):
                links[event.deal_id] = event.lead_id
        if event.type == "deal.created" and event.lead_id:
            links[event.deal_id] = event.lead_id
        if event.type.startswith("deal.") or (event.type == "customer.churned" and not event.lead_id):
            _record_deal_event(deals.setdefault(event.deal_id, Deal()), event)
        elif event.type.startswith("lead."):
            _record_lead_event(leads.setdefault(event.lead_id, PipelineLead()), event)
    for deal_id, lead_id in links.items():  # each linked lead learns of its deal, and of its close
        state = leads.setdefault(lead_id, PipelineLead())
        state.converted = True
        v = PipelineFamily(CellStore({}, "x"), RecordLog({}, "y", PIPELINE_CODEC), UTC, 35 * DAY, PIPELINES, "USD", TEAMS)._view(
            deals.get(deal_id, Deal()))
        state.set_deal(deal_id, Outcome(v.at, "", v.status) if v.status in ("won", "lost") and v.at is not None else None)
    return list(deals.values()), list(leads.values())


NOVEMBER = (datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp(), datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp())


def expected_totals(
    distinct: Sequence[dict[str, Any]], month: bool = False
) -> tuple[dict[tuple[str, str], dict[str, float]], dict]:
    """All-time fields per (scope, id) (or, with ``month``, those of November 2026) and the open gauges."""
    deals, leads = reference_states(distinct)
    windowed: dict[tuple[str, str], dict[str, float]] = {}
    now_fields: dict[tuple[str, str], dict[str, float]] = {}

    def counts(at: float, grain: str | None) -> bool:
        return NOVEMBER[0] <= at < NOVEMBER[1] if month else grain is None

    quotas: dict[str, list[Any]] = {}
    for e in distinct:
        if e["type"] == "quota.set" and (e["rep_id"] not in quotas or e["occurred_at"] > quotas[e["rep_id"]][0]):
            quotas[e["rep_id"]] = [e["occurred_at"], e["amount"]]
    for rep, (_, amount) in quotas.items():
        for scope, ident in (("rep", rep), ("team", TEAMS.get(rep, "unassigned"))):
            if month:
                into = windowed.setdefault((scope, ident), {})
                into["quota:USD"] = into.get("quota:USD", 0) + amount
    for deal in deals:
        w, n = deal_contribution(deal, PIPELINES, "USD", TEAMS)
        for (at, grain, scope, ident, name), value in w.items():
            if counts(at, grain):
                into = windowed.setdefault((scope, ident), {})
                into[name] = into.get(name, 0) + value
        for (scope, ident, name), value in n.items():
            into = now_fields.setdefault((scope, ident), {})
            into[name] = into.get(name, 0) + value
    for state in leads:
        for (at, grain, scope, ident, name), value in lead_contribution(state, TEAMS).items():
            if counts(at, grain):
                into = windowed.setdefault((scope, ident), {})
                into[name] = into.get(name, 0) + value
    return clean(windowed), clean(now_fields)


def clean(totals: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for key, fields in totals.items():
        kept = {name: round(value, 6) for name, value in fields.items() if abs(value) > 1e-6}
        if kept:
            out[key] = kept
    return out


def streamed_totals(cluster: Cluster, window: str = "all|-") -> tuple[dict[tuple[str, str], dict[str, float]], dict]:
    windowed: dict[tuple[str, str], dict[str, float]] = {}
    for p in range(PARTITIONS):
        cell = cluster.family.cells.get(p, window) or {}
        for scope, ids in cell.items():
            if scope == "wm":
                continue
            for ident, fields in ids.items():
                into = windowed.setdefault((scope, ident), {})
                for name, value in fields.items():
                    into[name] = into.get(name, 0) + value
    now_fields: dict[tuple[str, str], dict[str, float]] = {}
    for scope in ("pipeline", "rep", "team", "gauge", "team_gauge"):
        for ident, fields in cluster.family.open_totals(range(PARTITIONS), scope).items():
            now_fields[(scope, ident)] = dict(fields)
    return clean(windowed), clean(now_fields)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds())
def test_any_history_order_redelivery_and_crash_gives_the_batch_recomputation(
    world: tuple[list[dict[str, Any]], list[dict[str, Any]], random.Random],
) -> None:
    distinct, arrivals, rnd = world
    cluster = Cluster(decoded_limit=rnd.choice([None, 1]))  # 1: states go back to their entries after each persist
    cluster.send(arrivals)
    crashes = 0
    while cluster.pending():
        partition = rnd.choice(cluster.pending())
        crash = rnd if crashes < 3 and rnd.random() < 0.25 else None
        crashes += crash is not None
        cluster.step(partition, rnd.randint(1, 6), NOW, crash)
    for p in range(PARTITIONS):
        cluster.worker.processor.ensure_loaded(p)
    expected_windowed, expected_now = expected_totals(distinct)
    got_windowed, got_now = streamed_totals(cluster)
    # The reference has no per-pair Prometheus scopes for leads; every scope it has must match exactly.
    assert got_windowed == expected_windowed
    assert got_now == expected_now
    expected_month, _ = expected_totals(distinct, month=True)
    got_month, _ = streamed_totals(cluster, "month|2026-11")
    all_time_only = ("transition", "pipeline_rep")
    assert got_month == {k: v for k, v in expected_month.items() if k[0] not in all_time_only}


# --- Redis: the merge script derives the same rates from merged partials --------------------------------------


async def test_redis_totals_and_derived_fields_of_merged_partials_equal_the_python_formulas(
    redis_client: Any, unique_id: str
) -> None:
    from salespulse.families.pipeline.spec import redis_derived_spec
    from salespulse.outputs.redis import RedisPublisher

    cluster = Cluster()
    events: list[dict[str, Any]] = [quota("anna", "2026-11", 100_000)]
    for i in range(40):
        events.append(lead(f"L{i}", NOW - 10 * DAY + i, mql=i % 2 == 0))
        events += [created(f"D{i}", NOW - 9 * DAY + i * MINUTE, amount=1_000.0 + i), moved(f"D{i}", NOW - 8 * DAY, "meeting")]
        if i < 8:
            events += [converted(f"L{i}", f"D{i}", NOW - 9 * DAY), won(f"D{i}", NOW - 7 * DAY + i * HOUR)]
        elif i < 20:
            events.append(lost(f"D{i}", NOW - 6 * DAY, "timing"))
    cluster.send(events)
    cluster.drain()
    prefix = f"t{unique_id}"
    partials = [p._replace(redis_key=p.redis_key.replace("salespulse:", f"{prefix}:", 1))
                for p in cluster.family.render(set(range(PARTITIONS)), NOW)]
    publisher = RedisPublisher(redis_client, channel="", derived={"pipeline": redis_derived_spec(PIPELINES, ["USD"])})
    await publisher.publish(partials)
    for scope, ident, window in (("rep", "anna", "month|2026-11"), ("pipeline", "sales", "all|-"),
                                 ("stage", "sales/new", "all|-"), ("source", "ads", "all|-")):
        redis_window = "all" if window == "all|-" else window.replace("|", ":")
        raw = await redis_client.hgetall(f"{prefix}:pipeline:{scope}:{ident}:{redis_window}")
        got = {k.decode(): float(v) for k, v in raw.items()}
        expected = cluster.fields(scope, ident, window)
        assert set(got) == set(expected), (scope, set(got) ^ set(expected))
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-9), (scope, name)
    month = cluster.fields("rep", "anna", "month|2026-11")
    assert month["win_rate"] == pytest.approx(8 / 20) and month["leads_needed:USD"] > 0
    assert "tis_p50_s" in cluster.fields("stage", "sales/new")
    opened = await redis_client.hgetall(f"{prefix}:pipeline:open:pipeline:sales")
    assert float(opened[b"deals"]) == 20 and float(opened[b"deals:meeting"]) == 20


def test_config_quotas_enter_as_quota_set_events_that_any_real_quota_set_overrides() -> None:
    from salespulse.families.pipeline.fold import config_quota_events

    config_events = config_quota_events({"anna": {"2026-11": 100_000.0}, "ben": {"2026-11": 50_000.0}}, "USD")
    assert [e.event_id for e in config_events] == ["config-quota:anna:2026-11:100000.0:USD",
                                                    "config-quota:ben:2026-11:50000.0:USD"]
    assert config_quota_events({"anna": {"2026-11": 100_000.0}}, "USD")[0] == config_events[0]  # fixed ids
    cluster = Cluster()
    for event in config_events:
        cluster.append(event_to_json(event), event.partition_key)
    cluster.send([quota("ben", "2026-11", 70_000, at=NOW - 5 * DAY)])
    cluster.drain()
    changed = config_quota_events({"anna": {"2026-11": 120_000.0}}, "USD")  # the config changed
    cluster.append(event_to_json(changed[0]), changed[0].partition_key)
    cluster.drain()
    assert cluster.fields("rep", "anna", "month|2026-11")["quota:USD"] == 120_000
    assert cluster.fields("rep", "ben", "month|2026-11")["quota:USD"] == 70_000
    assert cluster.fields("team", "north", "month|2026-11")["quota:USD"] == 190_000
    assert "quota:USD" not in cluster.fields("rep", "anna")  # month windows only
    assert cluster.family.quotas(range(PARTITIONS)) == {("anna", "2026-11", "USD"): 120_000,
                                                         ("ben", "2026-11", "USD"): 70_000}


def test_closed_deals_leads_and_quotas_expire_after_the_state_retention_and_open_deals_never() -> None:
    cluster = Cluster()
    cluster.send([created("OPEN", NOW - 300 * DAY), created("SHUT", NOW - 300 * DAY), lost("SHUT", NOW - 299 * DAY),
                  lead("L1", NOW - 300 * DAY), quota("anna", "2026-01", 5_000, at=NOW - 300 * DAY)])
    cluster.drain(now=NOW - 299 * DAY)
    keys = {key for p in range(PARTITIONS) for key, _ in cluster.family.states.items(p)}
    assert {"d:OPEN", "d:SHUT", "l:L1", "q:anna:2026-01"} <= keys
    later = NOW + 10 * DAY  # state retention: 35 + 180 days after the newest fact
    for p in range(PARTITIONS):
        cluster.family.expire(p, later)
    keys = {key for p in range(PARTITIONS) for key, _ in cluster.family.states.items(p)}
    assert keys == {"d:OPEN"}
    assert cluster.family.quotas(range(PARTITIONS)) == {}
    assert cluster.open("pipeline", "sales")["deals"] == 1
