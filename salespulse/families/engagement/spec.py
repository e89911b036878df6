"""The engagement family, declared: email engagement, contact rate by channel, follow-up depth, activity ratios."""

from __future__ import annotations

from salespulse.families.engagement.rules import CHANNELS, CONNECTABLE, ENGAGEMENT_KINDS
from salespulse.families.spec import FamilySpec, Field
from salespulse.outputs.derived import Derived, Ratio
from salespulse.outputs.records import RecordSpec
from salespulse.outputs.series import Series, one_of

_RATES = ("open", "click", "reply", "bounce")  # the rate of each engagement kind (``open_rate`` ...)

DERIVED = Derived(
    ratios=(
        # email engagement, each over the emails sent
        *(Ratio(f"{rate}_rate", f"emails_{kind}", "emails_sent") for rate, kind in zip(_RATES, ENGAGEMENT_KINDS)),
        Ratio("personalized_share", "emails_personalized", "emails_sent"),
        # contact rate and later conversion to won, per channel
        *(Ratio(f"contact_rate:{c}", f"connected:{c}", f"attempts:{c}") for c in CONNECTABLE),
        *(Ratio(f"conversion_rate:{c}", f"won:{c}", f"reached:{c}") for c in CONNECTABLE),
        # follow-up depth
        Ratio("avg_touches_to_convert", "touches_to_convert", "leads_converted"),
        Ratio("avg_touches_before_quiet", "touches_before_quiet", "leads_quiet"),
        # activity ratios
        Ratio("first_meeting_rate", "leads_first_meeting", "leads"),
        Ratio("outreach_meeting_rate", "outreach_first_meeting", "outreach_leads"),
        Ratio("next_step_rate", "first_meeting_next_step", "first_meetings"),
    )
)

SPEC = FamilySpec(
    name="engagement",
    redis_prefix="salespulse:engagement",
    scopes=("rep", "team", "source"),
    all_time_scopes={"rep_team": 2},
    rolling={"7d": 168},  # rates want samples: one rolling window besides the calendar ones
    fields=(
        Field("emails_sent", "emails sent (window of the send)"),
        *(Field(f"emails_{kind}", f"sent emails {kind} (each email once)") for kind in ENGAGEMENT_KINDS),
        Field("emails_personalized", "sent emails marked personalized"),
        Field("emails_generic", "sent emails not marked personalized"),
        *(Field(f"attempts:{c}", f"outbound attempts on the {c} channel") for c in CHANNELS),
        *(Field(f"connected:{c}", f"attempts on the {c} channel that connected") for c in CONNECTABLE),
        *(Field(f"reached:{c}", f"leads first reached on the {c} channel") for c in CONNECTABLE),
        *(Field(f"won:{c}", f"of those, leads won at or after that contact ({c})") for c in CONNECTABLE),
        Field("leads_converted", "leads converted (window of the conversion)"),
        Field("touches_to_convert", "outbound touches up to the conversion"),
        Field("leads_quiet", "leads gone quiet (window of the last touch)"),
        Field("touches_before_quiet", "outbound touches before going quiet"),
        Field("leads", "leads created (source scope)"),
        Field("leads_first_meeting", "of those, leads that booked a first meeting"),
        Field("outreach_leads", "leads a rep first touched"),
        Field("outreach_first_meeting", "of those, leads with a first meeting after that touch"),
        Field("first_meetings", "first meetings booked"),
        Field("first_meeting_next_step", "first meetings followed by a later meeting or a conversion"),
    ),
    derived=DERIVED,
    beside=DERIVED.names,
    drop_zeros=True,
    series=(
        Series("salespulse_email_events",
               "Sent emails opened, clicked, replied to or bounced (each email once per event), by sending rep and team.",
               "counter", scope="rep_team", labels=("rep", "team", "event"),
               fields=one_of({f"emails_{kind}": (kind,) for kind in ENGAGEMENT_KINDS})),
    ),
    record=RecordSpec(
        model_name="EngagementPartial",
        doc="One partition's engagement fields for one rep, team or source in one window\n"
        "(``salespulse.metrics.engagement``): email engagement, contact attempts by channel, follow-up\n"
        "depth and activity ratios (docs/metrics.md).\n\n"
        "Fields are additive (sum the latest record of every partition) and derive the rates from the\n"
        "sums, e.g. open rate = emails_opened / emails_sent, contact rate of a channel = connected:<c> /\n"
        "attempts:<c>. A rep's record also carries its team's fields of the same partition and window\n"
        "(``team``, ``team_counts``), so a subscriber has the team's rate beside the rep's.",
        counts_doc="emails_sent, emails_opened/clicked/replied/bounced, emails_personalized/generic, "
        "attempts:<channel>, connected:<channel>, reached:<channel>, won:<channel>, leads_converted, "
        "touches_to_convert, leads_quiet, touches_before_quiet, leads, leads_first_meeting, outreach_leads, "
        "outreach_first_meeting, first_meetings, first_meeting_next_step (zeros left out)",
        targets_doc="a rep's targets of these fields (not additive)",
        team_beside=True,
    ),
)

#: The additive fields (targets of these kinds are published with this family).
ADDITIVE_FIELDS = SPEC.plain_fields
derived_fields = DERIVED.compute
redis_derived_spec = DERIVED.redis_spec
#: Derived rate -> (numerator, denominator).
RATIOS = {r.name: (r.numerator, r.denominator) for r in DERIVED.ratios}
