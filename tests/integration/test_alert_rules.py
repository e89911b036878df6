"""The Prometheus rules in ``prometheus/``: ``promtool check rules`` and ``promtool test rules``.

Never skipped: without promtool these tests fail. ``scripts/test.sh`` installs it (Debian's
``prometheus`` package) before running pytest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run the suite with scripts/test.sh, which installs it "
            "(Debian package 'prometheus'), or install it yourself (apt-get install prometheus, "
            "or the promtool binary from https://prometheus.io/download/)."
        )
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def test_rules_are_valid(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr
