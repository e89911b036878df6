"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port, and the webhook
server its receiver posts notifications to. Used by the unit tests of the sink and the integration tests."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from salespulse.embedded.ports import free_port


def alertmanager_binary() -> str:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail(
            "Alertmanager is not on PATH: run the suite with scripts/test.sh, which installs Debian's "
            "'prometheus-alertmanager', or install it yourself (apt-get install prometheus-alertmanager)."
        )
    return binary


class Webhook:
    """The receiver: an HTTP server that keeps every notification Alertmanager posts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.notifications: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Every alert of every notification whose labels include ``labels``, in arrival order."""
        return [
            alert
            for note in self.notifications
            for alert in note["alerts"]
            if all(alert["labels"].get(k) == v for k, v in labels.items())
        ]

    async def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.notifications):
                return self.notifications
            await asyncio.sleep(0.2)
        raise AssertionError(f"notifications so far: {self.notifications}")


def routing_config(webhook_url: str, group_by: tuple[str, ...] = ("team",)) -> dict[str, Any]:
    """Route everything to the webhook, grouped by team, quickly (seconds, not minutes)."""
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "hook",
            "group_by": list(group_by),
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


class Alertmanager:
    """One Alertmanager process (no cluster: its gossip port is off), restartable on the same port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "alertmanager.log"
        self.args = [
            alertmanager_binary(),
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 20.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"alertmanager exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"alertmanager not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    async def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, silenced and inhibited ones too), filtered by labels."""
        params = {"silenced": "true", "inhibited": "true", "active": "true", "unprocessed": "true"}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}/api/v2/alerts", params=params) as response:
                response.raise_for_status()
                found = await response.json()
        return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]

    async def silence(self, matchers: dict[str, str], duration_s: float, comment: str = "test") -> str:
        now = time.time()
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
            "startsAt": _iso(now - 1),
            "endsAt": _iso(now + duration_s),
            "createdBy": "tests",
            "comment": comment,
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/api/v2/silences", json=body) as response:
                response.raise_for_status()
                return str((await response.json())["silenceID"])


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")
