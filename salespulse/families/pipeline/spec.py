"""The pipeline family, declared: stages, closes, revenue, cycles, lead cohorts, quotas and the open pipeline now.

Its derived fields depend on the configuration (the funnel's stage pairs, the currencies): ``derived``
builds them from the static ones below.
"""

from __future__ import annotations

from collections.abc import Iterable

from salespulse.families.pipeline import live
from salespulse.families.pipeline.pipelines import Pipelines
from salespulse.families.pipeline.rules import HISTOGRAMS
from salespulse.families.spec import FamilySpec, Field
from salespulse.outputs.derived import Derived, Product, Ratio, Sum
from salespulse.outputs.records import RecordSpec
from salespulse.outputs.series import HistogramSeries, LiveSeries, Series, one_of, prefixed

RATIOS = (
    Ratio("win_rate", "won", "closed"), Ratio("close_rate", "cohort_won", "deals_created"),
    Ratio("created_to_lost", "deals_created", "lost"),
    Ratio("upsell_share", "won_upsell", "won"), Ratio("cross_sell_share", "won_cross_sell", "won"),
    # lead cohorts, over the leads created in the window
    Ratio("lead_to_opportunity", "opportunities", "leads"), Ratio("lead_to_customer", "customers", "leads"),
    Ratio("mql_to_customer", "mql_customers", "mql"),
    Ratio("avg_cycle_s", "cycle_sum_s", "cycle_count"), Ratio("avg_time_in_stage_s", "tis_sum_s", "tis_count"),
    Ratio("churned_first_year_share", "churned_first_year", "churned"),
)


def derived(pipelines: Pipelines, currencies: Iterable[str]) -> Derived:
    """The derived fields for these pipelines and currencies (Python and Redis read the same declaration)."""
    sums = [Sum("closed", (("won", 1), ("lost", 1)))]
    ratios = list(RATIOS)
    products = []
    for c in sorted(set(currencies)):
        sums.append(Sum(f"quota_gap:{c}", ((f"quota:{c}", 1), (f"won_amount:{c}", -1)), requires=(f"quota:{c}",)))
        ratios += [
            Ratio(f"avg_deal_size:{c}", f"won_amount:{c}", "won"),
            Ratio(f"quota_attainment:{c}", f"won_amount:{c}", f"quota:{c}"),
            Ratio(f"pipeline_coverage:{c}", f"open_closing:{c}", f"quota_gap:{c}"),
        ]
        products.append(Product(f"leads_needed:{c}", (f"quota:{c}", "won", "leads"), (f"won_amount:{c}", "customers")))
    seen: set[tuple[str, str]] = set()
    for name in sorted(pipelines.specs):
        stages = pipelines.funnel(name)
        for a, b in zip(stages, stages[1:]):
            if (a, b) not in seen:
                seen.add((a, b))
                ratios.append(Ratio(f"conversion:{a}>{b}", f"entries:{b}", f"entries:{a}"))
    return Derived(tuple(sums), tuple(ratios), tuple(products), tuple(HISTOGRAMS.values()))


def _histogram_fields(prefix: str, what: str) -> tuple[Field, ...]:
    histogram = HISTOGRAMS[prefix]
    return (
        Field(f"{prefix}_count", f"{what}: how many"),
        Field(f"{prefix}_sum_s", f"{what}: sum of seconds"),
        *(Field(name, f"{what} in this bucket (non-cumulative)") for name in histogram.fields),
    )


SPEC = FamilySpec(
    name="pipeline",
    redis_prefix="salespulse:pipeline",
    scopes=("rep", "team", "source", "pipeline", "stage"),
    all_time_scopes={"transition": 3, "pipeline_rep": 2},
    rolling={"24h": 24, "7d": 168, "30d": 720},
    extra_windows=("now",),
    fields=(
        Field("entries:<stage>", "deals entering a stage (window of the entry)"),
        Field("entries", "deals entering this stage (stage scope)"),
        Field("transition:<from>><to>", "stage changes (window of the change)"),
        Field("n", "stage changes (all-time transition scope)"),
        *_histogram_fields("tis", "time in a stage, when the deal left it"),
        Field("won", "deals won (window of the close)"),
        Field("won_amount:<currency>", "amount won"),
        Field("won_upsell", "won deals of kind upsell"),
        Field("won_cross_sell", "won deals of kind cross_sell"),
        Field("lost", "deals lost"),
        Field("lost_reason:<reason>", "lost deals by normalised reason"),
        Field("reopened", "closed deals that entered a stage again (window of that entry)"),
        *_histogram_fields("cycle", "sales cycle, creation to win"),
        Field("deals_created", "deals created (window of the creation)"),
        Field("cohort_won", "of those, won"),
        Field("leads", "leads created (window of the creation)"),
        Field("mql", "of those, marketing-qualified"),
        Field("opportunities", "of those, converted or with a deal"),
        Field("customers", "of those, with a won deal"),
        Field("mql_customers", "MQLs with a won deal"),
        Field("quota:<currency>", "a rep's quota (month windows)"),
        Field("open_closing:<currency>", "open amount expected to close in the month"),
        Field("churned", "customers churned"),
        Field("churned_first_year", "of those, within a year of the win"),
        Field("churned_later", "of those, later"),
        Field("deals", "open deals now (window `now`)"),
        Field("deals:<stage>", "open deals now in a stage"),
        Field("amount:<currency>", "open amount now"),
        Field("amount:<stage>:<currency>", "open amount now in a stage"),
        Field("weighted:<currency>", "open amount now × probability"),
        Field("amount", "open amount now (gauge scope)"),
        Field("weighted", "weighted open amount now (gauge scope)"),
    ),
    derived=derived(Pipelines(), ()),
    drop_zeros=True,
    series=(
        Series("salespulse_stage_entries", "Deals entering a stage, by pipeline and stage.", "counter",
               scope="pipeline", labels=("pipeline", "stage"), fields=prefixed("entries:")),
        HistogramSeries("salespulse_time_in_stage_seconds", "Time a deal spent in a stage before leaving it.",
                        scope="stage", labels=("pipeline", "stage"), histogram=HISTOGRAMS["tis"],
                        sum_field="tis_sum_s", when="tis_count"),
        Series("salespulse_deals_closed", "Deals closed, by pipeline, outcome (won/lost) and rep.", "counter",
               scope="pipeline_rep", labels=("pipeline", "outcome", "rep"),
               fields=one_of({"won": ("won",), "lost": ("lost",)}),
               arrange=lambda ident, outcome: (ident[0], *outcome, ident[1])),
        Series("salespulse_revenue_won", "Amount of won deals, by pipeline, rep and currency.", "counter",
               scope="pipeline_rep", labels=("pipeline", "rep", "currency"), fields=prefixed("won_amount:"),
               when="won", skip_zero=False),
        HistogramSeries("salespulse_sales_cycle_seconds", "Deal creation to win, by pipeline.",
                        scope="pipeline", labels=("pipeline",), histogram=HISTOGRAMS["cycle"],
                        sum_field="cycle_sum_s", when="cycle_count"),
        Series("salespulse_deals_lost_reasons",
               "Lost deals by pipeline and loss reason (normalised; unknown reasons are 'other').", "counter",
               scope="pipeline", labels=("pipeline", "reason"), fields=prefixed("lost_reason:")),
    ),
    live=(
        LiveSeries("salespulse_stage_transitions",
                   "Stage changes by pipeline, from and to stage, and direction in the configured stage order.",
                   "counter", ("pipeline", "from_stage", "to_stage", "direction"), live.transitions),
        LiveSeries("salespulse_open_deals", "Open deals now, by pipeline and stage.", "gauge", ("pipeline", "stage"),
                   live.open_deals),
        LiveSeries("salespulse_open_pipeline_amount", "Amount of open deals now, by pipeline, stage and currency.",
                   "gauge", ("pipeline", "stage", "currency"), live.open_amount),
        LiveSeries("salespulse_weighted_pipeline_amount",
                   "Forecast now: sum of open amount x probability (else the stage default), by pipeline and currency.",
                   "gauge", ("pipeline", "currency"), live.weighted_amount),
        LiveSeries("salespulse_quota_amount", "Quota per rep and period (YYYY-MM), from quota.set and the config.",
                   "gauge", ("rep", "period", "currency"), live.quotas),
        LiveSeries("salespulse_month_revenue_won_amount",
                   "Amount won this calendar month by the deal owner, by rep and currency (a partial: sum by rep).",
                   "gauge", ("rep", "currency"), live.month_won),
        LiveSeries("salespulse_month_quota_amount",
                   "The rep's quota for this calendar month, by rep and currency (max by rep).", "gauge",
                   ("rep", "currency"), live.month_quota),
    ),
    record=RecordSpec(
        model_name="PipelinePartial",
        doc="One partition's pipeline fields for one rep, team, source, pipeline or stage (``<pipeline>/<stage>``)\n"
        "in one window (``salespulse.metrics.pipeline``).\n\n"
        "Windowed fields are additive and land in the window of each fact's own time: ``entries:<stage>`` and\n"
        "``transition:<from>><to>`` when the deal entered the stage, ``tis_*`` (time in stage, stage scope) when\n"
        "it left it, ``won``, ``won_amount:<CUR>``, ``lost``, ``lost_reason:<reason>``, ``cycle_*`` at the close,\n"
        "``deals_created`` / ``cohort_won`` at the deal's creation, ``leads`` / ``mql`` / ``opportunities`` /\n"
        "``customers`` / ``mql_customers`` at the lead's creation, ``quota:<CUR>`` and ``open_closing:<CUR>`` in\n"
        "month windows. Window ``now`` carries the open pipeline (``deals``, ``deals:<stage>``, ``amount:<CUR>``,\n"
        "``amount:<stage>:<CUR>``, ``weighted:<CUR>``) of the partition's open deals. Sum the latest record of\n"
        "every partition, then derive rates (docs/metrics.md).",
    ),
)


def derived_fields(fields: dict[str, float], pipelines: Pipelines, currencies: Iterable[str]) -> dict[str, float]:
    """Rates, averages, quotas and quantiles of a merged set of fields (absent when undefined)."""
    return derived(pipelines, currencies).compute(fields)


def redis_derived_spec(pipelines: Pipelines, currencies: Iterable[str]) -> dict[str, object]:
    """The merge script's declaration of the same derived fields."""
    return derived(pipelines, currencies).redis_spec()
