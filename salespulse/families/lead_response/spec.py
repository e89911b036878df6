"""The lead-response family, declared: response times, SLA compliance and coverage per rep, team and source."""

from __future__ import annotations

from salespulse.families.lead_response import live
from salespulse.families.lead_response.rules import RESPONSE_TIMES
from salespulse.families.spec import FamilySpec, Field
from salespulse.outputs.derived import Derived, Ratio
from salespulse.outputs.records import RecordSpec
from salespulse.outputs.series import HistogramSeries, LiveSeries, Series, field_is

DERIVED = Derived(
    ratios=(
        Ratio("within_sla_rate", "within_sla", "created"),
        Ratio("contact_coverage", "touched", "created"),
        Ratio("avg_response_s", "response_sum_s", "touched"),
    ),
    histograms=(RESPONSE_TIMES,),
)

SPEC = FamilySpec(
    name="lead_response",
    redis_prefix="salespulse:lead_response",
    scopes=("rep", "team", "source"),
    all_time_scopes={"team_source": 2, "team_rep": 2},
    rolling={"1h": 1, "24h": 24, "7d": 168, "30d": 720},
    fields=(
        Field("created", "leads created (every field lands in the window of the lead's creation)"),
        Field("touched", "leads touched at least once"),
        Field("within_sla", "leads first touched at or before their deadline"),
        Field("late", "leads first touched after their deadline"),
        Field("response_sum_s", "sum of first-response times (business seconds)"),
        *(Field(name, "response times in this bucket (non-cumulative)") for name in RESPONSE_TIMES.fields),
    ),
    derived=DERIVED,
    only_declared=True,
    series=(
        Series("salespulse_leads_created", "Leads created, by team and source.", "counter",
               scope="team_source", labels=("team", "source"), fields=field_is("created"), skip_zero=False,
               fill=("created",)),
        Series("salespulse_lead_response_within_sla",
               "Leads first touched at or before their deadline (creation + SLA, in business time), by team and source.",
               "counter", scope="team_source", labels=("team", "source"), fields=field_is("within_sla"),
               skip_zero=False, fill=("within_sla",)),
        HistogramSeries("salespulse_lead_response_seconds",
                        "Time from lead creation to first outbound touch (business seconds), by team and source.",
                        scope="team_source", labels=("team", "source"), histogram=RESPONSE_TIMES,
                        sum_field="response_sum_s"),
    ),
    live=(
        LiveSeries("salespulse_leads_awaiting_response", "Live leads not yet touched, by team.", "gauge",
                   ("team",), live.awaiting),
        LiveSeries("salespulse_oldest_awaiting_lead_age_seconds", "Age of the oldest live untouched lead, by team.",
                   "gauge", ("team",), live.oldest_age),
        LiveSeries("salespulse_lead_response_sla_breaches",
                   "Leads whose first-touch deadline passed untouched, by team and responsible rep.", "counter",
                   ("team", "rep"), live.breaches),
        LiveSeries("salespulse_lead_response_sla_seconds", "The configured first-touch deadline.", "gauge", (), live.sla),
    ),
    record=RecordSpec(
        model_name="LeadResponsePartial",
        doc="One partition's lead-response fields for one rep, team or source in one window\n"
        "(``salespulse.metrics.lead-response``), in the window of the leads' *creation*.\n\n"
        "Fields are additive (sum the latest record of every partition); derive rates from the sums:\n"
        "within-SLA rate = within_sla / created, contact coverage = touched / created, mean response =\n"
        "response_sum_s / touched, quantiles from the ``le_*`` bucket counts (non-cumulative; ``le_300``\n"
        "holds responses in (180, 300] s).",
        counts_doc="created, touched, within_sla, late, response_sum_s and le_<seconds> / le_inf bucket counts",
    ),
)

ADDITIVE_FIELDS = SPEC.plain_fields
derived_fields = DERIVED.compute
redis_derived_spec = DERIVED.redis_spec
