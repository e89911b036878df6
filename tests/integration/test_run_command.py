"""``salespulse run`` on the embedded default: its own broker and Redis, simulated traffic, clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import pytest

from salespulse.embedded.ports import pid_alive
from salespulse.embedded.journal import read_journal
from tests.integration.stack import SalespulseProcess, call, metrics_text, post_events

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def command_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_run_embedded_with_simulation_shows_numbers_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env["SALESPULSE_DATA_DIR"] = str(tmp_path / "data")
    process = SalespulseProcess("run", tmp_path / "run.log", env, args=["--simulate", "--speedup", "60"])
    process.env = {**env, "SALESPULSE_HTTP_PORT": str(process.port), "PYTHONUNBUFFERED": "1"}
    process.start()
    assert process.proc is not None
    try:
        await process.wait_ready(timeout_s=60)
        servers = children_of(process.proc.pid)
        commands = " ".join(command_of(pid) for pid in servers)
        assert "tansu" in commands and "redis-server" in commands, commands

        deadline = time.monotonic() + 60
        activities = 0.0
        while time.monotonic() < deadline and activities == 0:
            text = await metrics_text(process.url)
            activities = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("salespulse_activities_total{")
            )
            await asyncio.sleep(1)
        assert activities > 0, process.log_tail()
        assert (tmp_path / "data" / "tansu.log").exists()
        # The console: a banner saying where everything is, then a summary line every 10 s.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "summary: " not in (tmp_path / "run.log").read_text():
            await asyncio.sleep(0.5)
        console = (tmp_path / "run.log").read_text()
        assert_console(console, process.url, str((tmp_path / "data").resolve()))
        # Durable by default: the simulated requests are journaled, Redis keeps an AOF, the banner says so.
        assert list(read_journal(tmp_path / "data" / "journal")), process.log_tail()
        assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
        assert "(the event journal and Redis, kept across restarts" in console, console
    finally:
        process.proc.send_signal(signal.SIGTERM)
        code = process.proc.wait(30)
    assert code == 0, process.log_tail()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in servers):
        await asyncio.sleep(0.2)
    assert not any(pid_alive(pid) for pid in servers), [command_of(pid) for pid in servers]


def assert_console(console: str, url: str, data_dir: str) -> None:
    """The banner names the webhook URL, /metrics, the board, Redis with a redis-cli example and the data dir;
    a summary line follows; none of Faust's or aiokafka's internal tables and warnings are shown."""
    assert f"webhooks  POST {url}/webhooks/events" in console, console
    assert f"metrics   {url}/metrics" in console, console
    assert f"board     {url}/" in console, console
    assert re.search(r"redis     redis://127\.0\.0\.1:\d+/0 .*try: redis-cli -u redis://127\.0\.0\.1:\d+/0 ", console), console
    assert f"data      {data_dir}" in console, console
    summary = re.search(
        r"summary: [\d.]+ events/s, \d+ leads waiting, p50 speed to lead today (-|\d+[smh][\dms]*), \d+ alerts fired",
        console,
    )
    assert summary, console
    for internal in ("Subscribed to topic", "highwater", "| topic", "Missing sensor state", "[^-", "Starting..."):
        assert internal not in console, (internal, console)
    assert "Traceback" not in console


async def test_an_ephemeral_run_keeps_nothing_and_says_so(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env["SALESPULSE_DATA_DIR"] = str(tmp_path / "data")
    async with SalespulseProcess("run", tmp_path / "run.log", env, args=["--ephemeral"]) as process:
        assert (await post_events(process.url, call("eph-1", "rep-1", "emea")))[0] == 202
        assert "--ephemeral: nothing is kept" in " ".join(process.log_path.read_text().split()), process.log_tail()
    assert not (tmp_path / "data" / "journal").exists()
    assert not (tmp_path / "data" / "redis").exists()


async def test_a_second_run_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env["SALESPULSE_DATA_DIR"] = str(tmp_path / "data")
    async with SalespulseProcess("run", tmp_path / "run1.log", env):
        second = SalespulseProcess("run", tmp_path / "run2.log", env)
        second.start()
        assert second.proc is not None
        assert second.proc.wait(30) == 2
        assert "in use by another salespulse run" in " ".join(second.log_tail().split())


async def test_run_refuses_a_journal_shorter_than_the_retention_before_starting_anything(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env |= {"SALESPULSE_DATA_DIR": str(tmp_path / "data"), "SALESPULSE_JOURNAL_DAYS": "10"}
    process = SalespulseProcess("run", tmp_path / "run.log", env)
    process.start()
    assert process.proc is not None
    assert process.proc.wait(30) == 2
    assert "SALESPULSE_JOURNAL_DAYS=10 is shorter than SALESPULSE_RETENTION_DAYS=35" in " ".join(
        process.log_tail().split()
    )
    assert not (tmp_path / "data").exists()


async def test_run_refuses_a_public_address_without_a_secret(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    process = SalespulseProcess("run", tmp_path / "run.log", env, args=["--host", "0.0.0.0"])
    process.start()
    assert process.proc is not None
    assert process.proc.wait(30) == 2
    assert "SALESPULSE_WEBHOOK_SECRET" in process.log_tail()


async def test_a_worker_without_a_reachable_broker_exits_with_a_clear_error(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SALESPULSE_")}
    env.update(SALESPULSE_KAFKA_URL="kafka://127.0.0.1:1", SALESPULSE_REDIS_URL="redis://127.0.0.1:1/0",
               SALESPULSE_STARTUP_TIMEOUT_S="2", SALESPULSE_DATA_DIR=str(tmp_path / "data"))
    process = SalespulseProcess("worker", tmp_path / "worker.log", env)
    process.start()
    assert process.proc is not None
    assert process.proc.wait(30) == 2
    log = process.log_tail()
    assert "cannot reach Kafka at 127.0.0.1:1" in log and "Traceback" not in log, log
