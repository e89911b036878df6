"""The SALESPULSE_CONFIG TOML file: parsing, defaults, per-team business hours and errors that name the key."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from salespulse.config import Config, ConfigError, load_config, parse_interval
from salespulse.families.business_hours import END_OF_DAY, BusinessHours, add_business_seconds

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.toml"
OSLO = ZoneInfo("Europe/Oslo")

FULL = """
[business_hours.default]
timezone = "Europe/Oslo"
hours = { mon = ["09:00-17:00"], tue = ["09:00-12:00", "13:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-16:00"] }
holidays = ["2026-12-24", "2026-12-25"]

[business_hours.teams.team-apac]
timezone = "Asia/Singapore"
hours = { mon = ["08:00-18:00"], sat = ["10:00-24:00"] }

[teams]
rep-001 = "team-emea"
rep-101 = "team-apac"

[lead_response]
sla_seconds = 600
warn_fraction = 0.8
outbound_activity_kinds = ["linkedin_message", "visit"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "salespulse.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value


# --- loading --------------------------------------------------------------------------------------------------


def test_full_config_is_parsed_into_schedules_directory_and_sla(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))

    default = config.business_hours_for("team-emea")
    assert default.tz == OSLO
    assert default.weekly[1] == [(time(9), time(12)), (time(13), time(17))]
    assert default.weekly[4] == [(time(9), time(16))]
    assert 5 not in default.weekly and 6 not in default.weekly
    assert default.holidays == {date(2026, 12, 24), date(2026, 12, 25)}

    apac = config.business_hours_for("team-apac")
    assert apac.tz == ZoneInfo("Asia/Singapore")
    assert apac.weekly == {0: [(time(8), time(18))], 5: [(time(10), END_OF_DAY)]}

    assert config.team_of_rep == {"rep-001": "team-emea", "rep-101": "team-apac"}
    assert config.team_for_rep("rep-101") == "team-apac"
    assert config.team_for_rep("rep-999") is None
    assert config.lead_response.sla_seconds == 600
    assert config.lead_response.effective_sla_seconds(300) == 600
    assert config.lead_response.warn_fraction == 0.8
    assert config.lead_response.outbound_activity_kinds == {"linkedin_message", "visit"}


def test_friday_evening_lead_is_due_monday_0905_with_configured_hours(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    due = add_business_seconds(config.business_hours_for("team-emea"), datetime(2026, 6, 5, 19, tzinfo=OSLO), 300)
    assert due.astimezone(OSLO).replace(tzinfo=None) == datetime(2026, 6, 8, 9, 5)


def test_team_without_own_schedule_falls_back_to_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.business_hours_for("team-nordics") is config.business_hours_for("team-emea")
    assert config.business_hours_for(None).tz == OSLO
    assert config.business_hours_for("team-apac") is not config.business_hours_for("team-nordics")


def test_team_schedule_without_default_falls_back_to_around_the_clock(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[business_hours.teams.a]\ntimezone = "UTC"\nhours = { mon = ["09:00-17:00"] }\n'))
    assert config.business_hours_for("a").weekly == {0: [(time(9), time(17))]}
    assert config.business_hours_for("b").is_always_open


def test_no_config_file_means_around_the_clock_and_env_sla() -> None:
    config = load_config(None)
    assert config.business_hours_for("any-team").is_always_open
    assert config.business_hours_for("any-team") == BusinessHours.always()
    assert config.team_of_rep == {}
    assert config.lead_response.sla_seconds is None
    assert config.lead_response.effective_sla_seconds(300) == 300
    assert config.lead_response.warn_fraction == 0.8  # the pre-breach warning is on by default
    assert config.lead_response.outbound_activity_kinds == frozenset()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_string_path_is_accepted(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, FULL))).lead_response.sla_seconds == 600


def test_bare_toml_dates_are_accepted_as_holidays(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[business_hours.default]\ntimezone = "UTC"\nhours = {}\nholidays = [2026-05-17]\n'))
    assert config.business_hours_for("x").holidays == {date(2026, 5, 17)}


def test_crm_section_maps_stages_owners_and_pipelines(tmp_path: Path) -> None:
    text = (
        '[crm.hubspot]\nowners = { "123" = "rep-001" }\n'
        '[crm.hubspot.stages]\n"9001" = { pipeline = "enterprise", stage = "signed", closed = true, won = true }\n'
        '[crm.pipedrive]\npipelines = { "1" = "smb" }\n'
    )
    crm = load_config(write(tmp_path, text)).crm
    assert crm.hubspot.rep_for("123") == "rep-001" and crm.hubspot.rep_for("999") == "999"
    signed = crm.hubspot.stage_for("9001")
    assert (signed.pipeline, signed.stage, signed.closed, signed.won) == ("enterprise", "signed", True, True)
    assert crm.hubspot.stage_for("closedlost").closed and not crm.hubspot.stage_for("closedlost").won
    assert crm.pipedrive.stage_for("7", "1").pipeline == "smb" and not crm.pipedrive.stage_for("7", "1").closed


def test_crm_section_rejects_a_won_stage_that_is_not_closed_and_unknown_keys(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[crm.close.stages]\nx = { pipeline = "p", stage = "s", won = true }\n')
    assert error.key == "crm.close.stages.x" and "closed" in str(error)
    assert error_for(tmp_path, "[crm.hubspot]\nowner = {}\n").key == "crm.hubspot.owner"


def test_pipelines_and_quotas_are_validated_models(tmp_path: Path) -> None:
    text = (
        'currency = "EUR"\n[pipelines.default]\nstages = ["new", "demo"]\nwon_stages = ["won"]\n'
        'lost_stages = ["lost"]\nprobabilities = { new = 0.1, demo = 0.4 }\n[quotas.rep-001]\n"2026-06" = 100000\n'
    )
    config = load_config(write(tmp_path, text))
    pipelines = config.pipeline_specs()
    assert pipelines.funnel("default") == ("new", "demo")
    assert pipelines.closes_as("default", "won") == "won" and pipelines.default_probability("default", "demo") == 0.4
    assert pipelines.direction("default", "demo", "new") == "backward"
    assert config.quotas == {"rep-001": {"2026-06": 100000}}
    assert config.currency == "EUR"


def test_documented_example_file_loads(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert config.business_hours_for("team-apac").tz == ZoneInfo("Asia/Singapore")
    assert config.business_hours_for("team-support").is_always_open
    assert config.business_hours_for("team-emea").tz == OSLO
    assert date(2026, 12, 31) in config.business_hours_for("team-emea").holidays
    assert config.lead_response.outbound_activity_kinds == {"linkedin_message", "visit"}


def test_parse_interval_reads_24_00_as_end_of_day() -> None:
    assert parse_interval("22:00-24:00") == (time(22), END_OF_DAY)
    assert parse_interval(" 9:30 - 17:15 ") == (time(9, 30), time(17, 15))


# --- errors ---------------------------------------------------------------------------------------------------


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(tmp_path)


def test_bad_toml_error_names_the_path_and_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[lead_response]\nsla_seconds = = 3\n")
    assert "not valid TOML" in str(err)
    assert str(tmp_path / "salespulse.toml") in str(err)
    assert "line 2" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("colour = 1\n", "colour", "unknown key"),
        ("[lead_response]\nsla_second = 300\n", "lead_response.sla_second", "unknown key"),
        ("[lead_response]\nsla_seconds = -5\n", "lead_response.sla_seconds", "greater than 0"),
        ("[lead_response]\nsla_seconds = \"300\"\n", "lead_response.sla_seconds", "integer"),
        ("[lead_response]\nsla_seconds = 1.5\n", "lead_response.sla_seconds", "integer"),
        ("[lead_response]\nwarn_fraction = 1.5\n", "lead_response.warn_fraction", "less than 1"),
        ("[lead_response]\noutbound_activity_kinds = \"visit\"\n", "lead_response.outbound_activity_kinds", "set"),
        ("[teams]\nrep-001 = 7\n", "teams.rep-001", "string"),
        ("teams = [\"a\"]\n", "teams", "dictionary"),
        ("pipelines = 3\n", "pipelines", "dictionary"),
        ("[pipelines.sales]\nstages = [\"a\"]\nstage = [\"a\"]\n", "pipelines.sales.stage", "unknown key"),
        ("[pipelines.sales]\nstages = []\n", "pipelines.sales.stages", "at least 1"),
        ("[pipelines.sales]\nstages = [\"a\", \"a\"]\n", "pipelines.sales", "more than once in this pipeline: a"),
        ("[pipelines.sales]\nstages = [\"a\"]\nwon_stages = [\"a\"]\n", "pipelines.sales", "more than once in this pipeline: a"),
        ("[pipelines.sales]\nstages = [\"a\"]\nprobabilities = { b = 0.5 }\n", "pipelines.sales", "not in this pipeline: b"),
        ("[pipelines.sales]\nstages = [\"a\"]\nprobabilities = { a = 1.5 }\n", "pipelines.sales.probabilities.a", "less than or equal to 1"),
        ("[pipelines.sales]\nstages = [\"a\"]\nloss_reasons = [\"Too Pricey\"]\n", "pipelines.sales.loss_reasons[0]", "pattern"),
        ("[quotas.rep-001]\n\"2026-13\" = 5\n", "quotas.rep-001.2026-13", "pattern"),
        ("[quotas.rep-001]\n\"2026-06\" = -5\n", "quotas.rep-001.2026-06", "greater than or equal to 0"),
        ("currency = \"usd\"\n", "currency", "pattern"),
        ("[business_hours.default]\nhours = {}\n", "business_hours.default.timezone", "missing"),
        ('[business_hours.default]\ntimezone = "UTC"\n', "business_hours.default.hours", "missing"),
        ('[business_hours.default]\ntimezone = "Mars/Olympus"\nhours = {}\n', "business_hours.default.timezone", "unknown time zone"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { monday = ["09:00-17:00"] }\n', "business_hours.default.hours.monday", "unknown key"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { mon = ["9-17"] }\n', "business_hours.default.hours.mon[0]", "HH:MM-HH:MM"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { mon = ["17:00-09:00"] }\n', "business_hours.default.hours.mon[0]", "start before it ends"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { mon = ["09:00-25:00"] }\n', "business_hours.default.hours.mon[0]", "end time"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { mon = "09:00-17:00" }\n', "business_hours.default.hours.mon", "list"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = { tue = ["09:00-13:00", "12:00-17:00"] }\n', "business_hours.default.hours.tue", "overlap"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = {}\nholidays = ["2026-13-01"]\n', "business_hours.default.holidays[0]", "date"),
        ('[business_hours.default]\ntimezone = "UTC"\nhours = {}\nopen = true\n', "business_hours.default.open", "unknown key"),
        ('[business_hours.teams.team-apac]\ntimezone = "Asia/Nowhere"\nhours = {}\n', "business_hours.teams.team-apac.timezone", "unknown time zone"),
        ('[business_hours.teams."team.x"]\ntimezone = "UTC"\nhours = { sun = ["x"] }\n', 'business_hours.teams."team.x".hours.sun[0]', "HH:MM-HH:MM"),
        ("[business_hours.weekend]\ntimezone = \"UTC\"\n", "business_hours.weekend", "unknown key"),
    ],
)
def test_bad_value_error_names_the_dotted_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    err = error_for(tmp_path, text)
    assert err.key == key
    message = str(err)
    assert str(tmp_path / "salespulse.toml") in message
    assert f"  {key}: " in message
    assert words in message


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[lead_response]\nsla_seconds = 0\nwarn_fraction = 2\n[teams]\nr = 1\n")
    assert "3 problem(s)" in str(err)
    for key in ("lead_response.sla_seconds", "lead_response.warn_fraction", "teams.r"):
        assert f"  {key}: " in str(err)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_config_is_immutable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    with pytest.raises(Exception):
        config.lead_response = None  # type: ignore[misc]
    assert config.lead_response.sla_seconds == 600


def test_documented_example_file_has_pipelines_and_quotas() -> None:
    config = load_config(EXAMPLE)
    assert config.currency == "USD"
    assert config.pipeline_specs().funnel("default") == ("qualification", "discovery", "proposal", "negotiation")
    assert config.quotas["rep-001"]["2026-11"] == 100000
# --- targets and [activity] ----------------------------------------------------------------------------------

TARGETS = """
[teams]
rep-001 = "team-emea"
[targets.default]
day = { call = 40, email_sent = 30 }
month = { emails_personalized = 50 }
[targets.teams.team-emea]
day = { call = 50 }
[targets.reps.rep-001]
day = { email_sent = 10 }
week = { meeting_booked = 5 }
"""


def test_targets_resolve_rep_over_team_over_default_kind_by_kind(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TARGETS))
    assert config.targets_for("rep-001", "day") == {"call": 50, "email_sent": 10}
    assert config.targets_for("rep-001", "week") == {"meeting_booked": 5}
    assert config.targets_for("rep-001", "month") == {"emails_personalized": 50}
    assert config.targets_for("rep-999", "day") == {"call": 40, "email_sent": 30}
    assert Config().targets_for("rep-001", "day") == {}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[targets.default]\nday = { call = 0 }\n", "targets.default.day.call"),
        ("[targets.default]\nday = { call = 2.5 }\n", "targets.default.day.call"),
        ("[targets.default]\nhour = { call = 2 }\n", "targets.default.hour"),
        ('[targets.default]\nday = { "Call Out" = 2 }\n', 'targets.default.day."Call Out"'),
        ("[targets]\nx = 1\n", "targets.x"),
        ("[activity]\nquiet_after_days = 0\n", "activity.quiet_after_days"),
        ("[activity]\nquiet_days = 3\n", "activity.quiet_days"),
    ],
    ids=["zero", "fraction", "period", "kind", "unknown", "quiet-zero", "quiet-typo"],
)
def test_bad_targets_and_activity_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key, str(info.value)


def test_quiet_period_defaults_to_14_days_and_is_configurable(tmp_path: Path) -> None:
    assert Config().activity.quiet_after_days == 14
    assert load_config(write(tmp_path, "[activity]\nquiet_after_days = 3.5\n")).activity.quiet_after_days == 3.5


def test_documented_example_targets_and_quiet_period() -> None:
    config = load_config(EXAMPLE)
    assert config.targets_for("rep-001", "day") == {"call": 60, "email_sent": 30}
    assert config.targets_for("rep-101", "day") == {"call": 30, "email_sent": 30}  # team-apac's call target
    assert config.targets_for("rep-101", "month") == {"emails_personalized": 50}
    assert config.activity.quiet_after_days == 14


def test_targets_count_as_configured_only_when_one_is_set(tmp_path: Path) -> None:
    assert not Config().targets.configured
    assert not load_config(write(tmp_path, "[targets.reps.rep-001]\n")).targets.configured
    assert load_config(write(tmp_path, TARGETS)).targets.configured


def test_stage_order_from_the_crm_mapping_judges_direction(tmp_path: Path) -> None:
    text = (
        '[crm.pipedrive.stages]\n'
        '"1" = { pipeline = "smb", stage = "qualified", order = 1 }\n'
        '"2" = { pipeline = "smb", stage = "proposal", order = 2, probability = 0.5 }\n'
        '"3" = { pipeline = "smb", stage = "contact_made", order = 0 }\n'
        '"9" = { pipeline = "smb", stage = "won", closed = true, won = true, order = 9 }\n'
        '"5" = { pipeline = "other", stage = "a" }\n'
    )
    pipelines = load_config(write(tmp_path, text)).pipeline_specs()
    assert pipelines.funnel("smb") == ("contact_made", "qualified", "proposal")
    assert pipelines.direction("smb", "qualified", "proposal") == "forward"
    assert pipelines.direction("smb", "proposal", "contact_made") == "backward"
    assert pipelines.closes_as("smb", "won") == "won" and pipelines.default_probability("smb", "proposal") == 0.5
    # stages without an order give no pipeline order: unknown, not alphabetical
    assert pipelines.direction("other", "a", "b") == "unknown"
    # the built-in default pipeline stays when no [pipelines] table is given
    assert pipelines.funnel("default") == ("qualification", "discovery", "proposal", "negotiation")


def test_a_pipelines_table_wins_over_the_crm_order(tmp_path: Path) -> None:
    text = (
        '[pipelines.smb]\nstages = ["proposal", "qualified"]\n'
        '[crm.pipedrive.stages]\n'
        '"1" = { pipeline = "smb", stage = "qualified", order = 1 }\n'
        '"2" = { pipeline = "smb", stage = "proposal", order = 2 }\n'
    )
    pipelines = load_config(write(tmp_path, text)).pipeline_specs()
    assert pipelines.direction("smb", "qualified", "proposal") == "backward"
