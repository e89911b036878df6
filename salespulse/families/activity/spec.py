"""The activity family, declared: counts of rep activities per rep and team (``salespulse:activity:*``)."""

from __future__ import annotations

from salespulse.families.activity.rules import split_field
from salespulse.families.spec import FamilySpec, Field
from salespulse.outputs.records import RecordSpec
from salespulse.outputs.series import Series

SPEC = FamilySpec(
    name="activity",
    redis_prefix="salespulse:activity",
    scopes=("rep", "team"),
    all_time_scopes={"rep_team": 2},
    rolling={"24h": 24, "7d": 168},
    fields=(
        Field("<kind>", "activities of a kind: `call`, `email_sent`, `meeting_booked`, `meeting_held` or a logged kind"),
        Field("<kind>:<outcome>", "calls by outcome (`call:connected` ...); `call` is their roll-up"),
        Field("total", "every activity (a roll-up)"),
    ),
    series=(
        Series("salespulse_activities",
               "Rep activities (calls, emails sent, meetings, logged activities) by rep, team, kind and outcome.",
               "counter", scope="rep_team", labels=("rep", "team", "kind", "outcome"), fields=split_field),
    ),
    record=RecordSpec(
        model_name="ActivityPartial",
        doc="One partition's activity counts for one rep or team in one window (``salespulse.metrics.activity``).\n\n"
        "Keyed ``<scope>:<id>:<window>:p<partition>`` so compaction keeps the latest value per partial; a\n"
        "subscriber's total is the sum of the latest record of every partition.",
        counts_type=int,
        counts_doc="count per field: kind, kind:outcome (calls), per-kind totals and 'total'",
        id_doc="rep_id or team name ('unassigned' when unknown)",
        window_doc="'all', 'day:YYYY-MM-DD', 'week:YYYY-Www', 'month:YYYY-MM', 'rolling:24h' or 'rolling:7d'",
        partition_doc="source partition whose events this partial counts",
        watermark_doc="highest source offset included; a larger one supersedes",
        targets_doc="a rep's configured targets for this day, week or month window, per count field; not additive: "
        "attainment = (sum of counts[kind] over partitions) / targets[kind]",
    ),
)
