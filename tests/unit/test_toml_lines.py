"""Line numbers of TOML keys, for configuration errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from salespulse.config import ConfigError, load_config
from salespulse.toml_lines import key_lines, line_of

TEXT = '''# a comment
currency = "EUR"

[lead_response]
sla_seconds = 300
"warn fraction" = 0.5

[business_hours.teams."team.apac"]
timezone = "Asia/Tokyo"
hours = { mon = ["09:00-17:00"] }
notes = """
fake = 1
"""
after = 2

[[pipelines.x.list]]
stage = "a"
'''


def test_headers_keys_quoted_keys_and_multiline_strings() -> None:
    lines = key_lines(TEXT)
    assert lines[("currency",)] == 2
    assert lines[("lead_response",)] == 4
    assert lines[("lead_response", "sla_seconds")] == 5
    assert lines[("lead_response", "warn fraction")] == 6
    assert lines[("business_hours", "teams", "team.apac")] == 8
    assert lines[("business_hours", "teams", "team.apac", "hours")] == 10
    assert ("business_hours", "teams", "team.apac", "fake") not in lines  # inside a multi-line string
    assert lines[("business_hours", "teams", "team.apac", "after")] == 14
    assert lines[("pipelines", "x", "list", "stage")] == 17


def test_a_key_the_scan_cannot_place_falls_back_to_its_parent() -> None:
    lines = key_lines(TEXT)
    assert line_of(("business_hours", "teams", "team.apac", "hours", "mon", 0), lines) == 10
    assert line_of(("lead_response", "[key]"), lines) == 4
    assert line_of(("nowhere",), lines) is None


def test_config_errors_carry_file_line_and_key_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "salespulse.toml"
    path.write_text('currency = "EUR"\n\n[lead_response]\nsla_seconds = -5\n\n[activity]\nquiet_days = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.lines() == [
        f"{path}:4: lead_response.sla_seconds: Input should be greater than 0",
        f"{path}:7: activity.quiet_days: unknown key (not permitted here)",
    ]


def test_a_file_level_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "salespulse.toml"
    path.write_text("currency = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.lines()
    assert line.startswith(f"{path}: not valid TOML") and "line 1" in line
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.lines() == [f"{tmp_path}: is a directory, expected a TOML config file"]
