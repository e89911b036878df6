"""``Settings`` from the environment: the family list is checked, normalised and ordered."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from salespulse.settings import METRIC_FAMILIES, Settings


def test_every_family_runs_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SALESPULSE_FAMILIES", raising=False)
    assert Settings().family_names == METRIC_FAMILIES


def test_families_from_the_environment_are_trimmed_deduplicated_and_in_rendering_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SALESPULSE_FAMILIES", " engagement, activity,,engagement ")
    assert Settings().family_names == ("activity", "engagement")


def test_an_unknown_family_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESPULSE_FAMILIES", "activity,forecast")
    with pytest.raises(ValidationError, match=r"families[\s\S]*unknown metric families \['forecast'\]"):
        Settings()


def test_an_empty_family_list_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESPULSE_FAMILIES", " , ")
    with pytest.raises(ValidationError, match="name at least one metric family"):
        Settings()


def test_the_worker_command_refuses_an_unknown_family_flag_before_starting_anything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "salespulse", "worker", "--families", "activity,forecast"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    said = done.stdout + done.stderr
    assert "SALESPULSE_FAMILIES" in said and "forecast" in said
