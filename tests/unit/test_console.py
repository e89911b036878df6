"""The console: the start banner, the summary line, and logging that keeps Faust's internals out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mode import Service
from prometheus_client import CollectorRegistry, Counter

from salespulse.console import (
    Place,
    Snapshot,
    banner,
    counter_total,
    counter_total_where,
    duration,
    http_places,
    redacted,
    redis_place,
    summary_line,
)
from salespulse.logs import QUIET_LOGGERS, logging_config, setup_logging


def test_the_banner_aligns_one_place_per_line() -> None:
    lines = banner("run", [Place("webhooks", "POST http://h:1/webhooks/events"), Place("data", "/d", "(hint)")])
    assert lines[0].startswith("salespulse ") and lines[0].endswith(" run")
    assert lines[1:] == ["  webhooks  POST http://h:1/webhooks/events", "  data      /d   (hint)"]


def test_http_places_name_webhooks_metrics_and_the_board() -> None:
    places = {p.label: p for p in http_places("::1", 8080, webhooks=True, board=True)}
    assert places["webhooks"].where == "POST http://[::1]:8080/webhooks/events"
    assert places["metrics"].where == "http://[::1]:8080/metrics"
    assert places["board"].where == "http://[::1]:8080/"
    assert set(p.label for p in http_places("h", 1, webhooks=False, board=False)) == {"metrics"}


def test_a_redis_password_is_never_shown() -> None:
    assert redacted("rediss://app:hunter2@cache:6380/0") == "rediss://app:****@cache:6380/0"
    assert redacted("redis://:hunter2@cache/0") == "redis://:****@cache/0"
    assert redacted("redis://cache:6379/0") == "redis://cache:6379/0"
    place = redis_place("redis://:hunter2@cache/0")
    assert "hunter2" not in place.where + place.hint and "redis-cli -u redis://:<password>@cache/0" in place.hint


def test_the_summary_line_shows_rates_and_today_numbers() -> None:
    before = Snapshot(at=100.0, events=1000, leads_waiting=3, p50_today_s=None, alerts_fired=1)
    now = Snapshot(at=110.0, events=1250, leads_waiting=4, p50_today_s=125.4, alerts_fired=2)
    text, fields = summary_line(before, now)
    assert text == "summary: 25.0 events/s, 4 leads waiting, p50 speed to lead today 2m05s, 2 alerts fired"
    assert fields == {"events_per_s": 25.0, "leads_waiting": 4, "p50_speed_to_lead_today_s": 125.4, "alerts_fired": 2}
    text, _ = summary_line(Snapshot(0, 0), Snapshot(10, 5), "events published")
    assert text == "summary: 0.5 events published/s"
    assert [duration(s) for s in (41, 3600 + 7 * 60)] == ["41s", "1h07m"]


def test_counters_are_summed_over_their_labels() -> None:
    registry = CollectorRegistry()
    alerts = Counter("alerts", "a", ["status"], registry=registry)
    alerts.labels("firing").inc(3)
    alerts.labels("resolved").inc(2)
    assert counter_total(alerts) == 5
    assert counter_total_where(alerts, "status", lambda s: s == "firing") == 3


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    mundane = Service.mundane_level
    yield
    Service.mundane_level = mundane
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_faust_and_aiokafka_internals_only_at_debug(restore_logging: None) -> None:
    for level in ("info", "warning"):
        loggers = logging_config(level)["loggers"]
        assert {name: spec["level"] for name, spec in loggers.items()} == dict.fromkeys(QUIET_LOGGERS, "WARNING")
    assert {spec["level"] for spec in logging_config("debug")["loggers"].values()} == {"DEBUG"}


def test_json_format_is_one_object_per_line_and_the_benign_faust_warning_is_dropped(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("info", "json")
    logging.getLogger("faust.tables.recovery").info("highwater table")
    logging.getLogger("salespulse.engine.faust.app").warning("[^-App]: Missing sensor state for rebalance #%s", 1)
    logging.getLogger("salespulse.console").info("summary: %s", "x" * 200, extra={"summary": {"events_per_s": 1.5}})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["message"] == "summary: " + "x" * 200 and record["summary"] == {"events_per_s": 1.5}
    assert record["level"] == "INFO" and record["logger"] == "salespulse.console" and "timestamp" in record


def test_text_format_lines_are_not_wrapped(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    logging.getLogger("salespulse.x").error("%s", "y" * 300)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("ERROR salespulse.x: " + "y" * 300)


def test_data_dir_is_shown_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from salespulse.console import data_place

    monkeypatch.chdir(tmp_path)
    assert data_place(Path(".salespulse")).where == str(tmp_path / ".salespulse")
