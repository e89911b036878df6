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


@pytest.mark.parametrize("url", ["kafka://k:9092", "kafka://k1:9092;k2:9093", "kafka://k1:9092,k2:9092;"])
def test_kafka_urls_of_the_readme_forms_are_accepted(url: str) -> None:
    assert Settings(kafka_url=url).kafka_url == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://x:1", "got scheme http://"),
        ("k:9092", "got scheme none"),
        ("kafka://k", "got 'k'"),
        ("kafka://k:port", "got 'k:port'"),
        ("kafka://k:0", "got 'k:0'"),
        ("kafka://", "got no broker"),
    ],
)
def test_a_kafka_url_other_than_kafka_scheme_host_port_is_refused(url: str, said: str) -> None:
    with pytest.raises(ValidationError, match=f"expected kafka://host:port.*{said}"):
        Settings(kafka_url=url)


@pytest.mark.parametrize("url", ["redis://r:6379/0", "rediss://u:p@r:6380/1", "unix:///run/redis.sock"])
def test_redis_urls_of_the_three_schemes_are_accepted(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


def test_another_redis_scheme_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(redis_url="http://u:hunter2@r:6379")
    message = "\n".join(error["msg"] for error in info.value.errors())
    assert "redis://, rediss://, unix://" in message and "hunter2" not in message


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESPULSE_WEBHOOK_SECRET", "")
    monkeypatch.setenv("SALESPULSE_PUBLIC_URL", "")
    settings = Settings()
    assert settings.webhook_secret is None and settings.public_url is None


def test_a_bad_variable_is_one_line_naming_it_before_anything_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "salespulse", "replay", "/dev/null"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "SALESPULSE_PARTITIONS": "0", "SALESPULSE_KAFKA_URL": "kafka://k:1"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: SALESPULSE_PARTITIONS: Input should be greater than or equal to 1"
    ], done.stderr
