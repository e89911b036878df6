"""Metric records published on the ``salespulse.metrics.*`` topics (their JSON Schemas ship in ``schemas/``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ActivityPartial(BaseModel):
    """One partition's activity counts for one rep or team in one window (``salespulse.metrics.activity``).

    Keyed ``<scope>:<id>:<window>:p<partition>`` so compaction keeps the latest value per partial; a
    subscriber's total is the sum of the latest record of every partition.
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["activity"]
    scope: Literal["rep", "team"]
    id: str = Field(description="rep_id or team name ('unassigned' when unknown)")
    window: str = Field(
        description="'all', 'day:YYYY-MM-DD', 'week:YYYY-Www', 'month:YYYY-MM', 'rolling:24h' or 'rolling:7d'",
        pattern=r"^(all|day:\d{4}-\d{2}-\d{2}|week:\d{4}-W\d{2}|month:\d{4}-\d{2}|rolling:(24h|7d))$",
    )
    partition: int = Field(ge=0, description="source partition whose events this partial counts")
    watermark: int = Field(ge=-1, description="highest source offset included; a larger one supersedes")
    counts: dict[str, int] = Field(
        description="count per field: kind, kind:outcome (calls), per-kind totals and 'total'"
    )
    targets: dict[str, int] | None = Field(
        None,
        description="a rep's configured targets for this day, week or month window, per count field; not additive: "
        "attainment = (sum of counts[kind] over partitions) / targets[kind]",
    )
    updated_at: AwareDatetime


class LeadResponsePartial(BaseModel):
    """One partition's lead-response fields for one rep, team or source in one window
    (``salespulse.metrics.lead-response``), in the window of the leads' *creation*.

    Fields are additive (sum the latest record of every partition); derive rates from the sums:
    within-SLA rate = within_sla / created, contact coverage = touched / created, mean response =
    response_sum_s / touched, quantiles from the ``le_*`` bucket counts (non-cumulative; ``le_300``
    holds responses in (180, 300] s).
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["lead_response"]
    scope: Literal["rep", "team", "source"]
    id: str
    window: str = Field(
        pattern=r"^(all|day:\d{4}-\d{2}-\d{2}|week:\d{4}-W\d{2}|month:\d{4}-\d{2}|rolling:(1h|24h|7d|30d))$"
    )
    partition: int = Field(ge=0)
    watermark: int = Field(ge=-1)
    counts: dict[str, float] = Field(
        description="created, touched, within_sla, late, response_sum_s and le_<seconds> / le_inf bucket counts"
    )
    updated_at: AwareDatetime


class PipelinePartial(BaseModel):
    """One partition's pipeline fields for one rep, team, source, pipeline or stage (``<pipeline>/<stage>``)
    in one window (``salespulse.metrics.pipeline``).

    Windowed fields are additive and land in the window of each fact's own time: ``entries:<stage>`` and
    ``transition:<from>><to>`` when the deal entered the stage, ``tis_*`` (time in stage, stage scope) when
    it left it, ``won``, ``won_amount:<CUR>``, ``lost``, ``lost_reason:<reason>``, ``cycle_*`` at the close,
    ``deals_created`` / ``cohort_won`` at the deal's creation, ``leads`` / ``mql`` / ``opportunities`` /
    ``customers`` / ``mql_customers`` at the lead's creation, ``quota:<CUR>`` and ``open_closing:<CUR>`` in
    month windows. Window ``now`` carries the open pipeline (``deals``, ``deals:<stage>``, ``amount:<CUR>``,
    ``amount:<stage>:<CUR>``, ``weighted:<CUR>``) of the partition's open deals. Sum the latest record of
    every partition, then derive rates (docs/metrics.md).
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["pipeline"]
    scope: Literal["rep", "team", "source", "pipeline", "stage"]
    id: str
    window: str = Field(
        pattern=r"^(all|now|day:\d{4}-\d{2}-\d{2}|week:\d{4}-W\d{2}|month:\d{4}-\d{2}|rolling:(24h|7d|30d))$"
    )
    partition: int = Field(ge=0)
    watermark: int = Field(ge=-1)
    counts: dict[str, float]
    updated_at: AwareDatetime


class EngagementPartial(BaseModel):
    """One partition's engagement fields for one rep, team or source in one window
    (``salespulse.metrics.engagement``): email engagement, contact attempts by channel, follow-up
    depth and activity ratios (docs/metrics.md).

    Fields are additive (sum the latest record of every partition) and derive the rates from the
    sums, e.g. open rate = emails_opened / emails_sent, contact rate of a channel = connected:<c> /
    attempts:<c>. A rep's record also carries its team's fields of the same partition and window
    (``team``, ``team_counts``), so a subscriber has the team's rate beside the rep's.
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["engagement"]
    scope: Literal["rep", "team", "source"]
    id: str
    window: str = Field(
        pattern=r"^(all|day:\d{4}-\d{2}-\d{2}|week:\d{4}-W\d{2}|month:\d{4}-\d{2}|rolling:7d)$"
    )
    partition: int = Field(ge=0)
    watermark: int = Field(ge=-1)
    counts: dict[str, float] = Field(
        description="emails_sent, emails_opened/clicked/replied/bounced, emails_personalized/generic, "
        "attempts:<channel>, connected:<channel>, reached:<channel>, won:<channel>, leads_converted, "
        "touches_to_convert, leads_quiet, touches_before_quiet, leads, leads_first_meeting, outreach_leads, "
        "outreach_first_meeting, first_meetings, first_meeting_next_step (zeros left out)"
    )
    targets: dict[str, int] | None = Field(None, description="a rep's targets of these fields (not additive)")
    team: str | None = Field(None, description="for a rep: the team whose fields are in team_counts")
    team_counts: dict[str, float] | None = Field(
        None, description="for a rep: its team's additive fields in the same partition and window"
    )
    updated_at: AwareDatetime


METRIC_RECORDS: dict[str, type[BaseModel]] = {
    "activity": ActivityPartial,
    "lead_response": LeadResponsePartial,
    "pipeline": PipelinePartial,
    "engagement": EngagementPartial,
}
