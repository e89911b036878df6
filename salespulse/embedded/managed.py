"""The lifecycle shared by the embedded servers: spawn, wait until ready, stop, restart.

A subclass says what to run (:meth:`ManagedServer.command`, :meth:`ManagedServer.environment`)
and how to tell it is ready (:meth:`ManagedServer._probe`); :class:`ManagedServer` does the
rest, with the process-lifetime guarantees of
:func:`~salespulse.embedded.ports.spawn_tied_to_parent`.
"""

from __future__ import annotations

import abc
import asyncio
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from salespulse.embedded.ports import free_port, log_tail, spawn_tied_to_parent, terminate_process

__all__ = ["ManagedServer"]


class ManagedServer(abc.ABC):
    """A server subprocess on ``host:port`` that cannot outlive this Python process.

    ``port=None`` picks a free port at the first start; restarts reuse it. The process
    runs in its own session, is stopped at exit and gets PR_SET_PDEATHSIG.
    """

    #: Name used in error messages, e.g. ``"Tansu broker"``.
    display_name: ClassVar[str]
    #: Middle of the TimeoutError message; formatted with ``timeout_s`` and ``last``
    #: (the last exception :meth:`_probe` raised, or None).
    _not_ready_phrase: ClassVar[str] = "not ready after {timeout_s:.1f}s (last error: {last!r})"

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- hooks
    @abc.abstractmethod
    def command(self) -> list[str]:
        """The exact command line used to start the server."""

    def environment(self) -> dict[str, str]:
        """Variables set on top of this process's environment for the server (default: none)."""
        return {}

    def _prepare(self) -> None:
        """Called before every spawn (e.g. to create directories); default does nothing."""

    @abc.abstractmethod
    def _probe(self, timeout_s: float) -> None:
        """Return if the server on ``host:port`` is ready; raise OSError if not yet.

        Each attempt should take at most about ``timeout_s``. Any exception other than
        OSError aborts :meth:`start` (the process is stopped and the exception propagates).
        """

    # ----------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        """The host the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """Listening port; chosen on first access/start when constructed with ``port=None``."""
        if self._port is None:
            self._port = free_port(self._host)
        return self._port

    @property
    def log_path(self) -> Path | None:
        """File receiving the server's stdout/stderr (None: discarded)."""
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the server process, or None if never started / stopped."""
        return self._proc.pid if self._proc is not None else None

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 20.0) -> None:
        """Spawn the server and block until :meth:`_probe` passes (no-op if running), else stop
        it and raise RuntimeError (with the log tail) if it exits early or TimeoutError (with the
        last probe error and the log tail) if it is not ready within ``timeout_s``.
        """
        if self.running:
            return
        self._prepare()
        extra = self.environment()
        env = {**os.environ, **extra} if extra else None
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
        """Raise RuntimeError (with the log tail) unless the process is running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            raise RuntimeError(
                f"{self.display_name} on {self._host}:{self.port} exited during startup "
                f"(code {code}); log tail:\n{log_tail(self._log_path)}"
            )

    def _wait_ready(self, timeout_s: float) -> None:
        """Poll :meth:`_probe` until it passes, the process dies, or ``timeout_s`` runs out."""
        deadline = time.monotonic() + timeout_s
        last: OSError | None = None
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = self._not_ready_phrase.format(timeout_s=timeout_s, last=last)
                raise TimeoutError(
                    f"{self.display_name} on {self._host}:{self.port} {reason}; "
                    f"log tail:\n{log_tail(self._log_path)}"
                )
            try:
                self._probe(min(0.5, remaining))
            except OSError as exc:
                last = exc
            else:
                # Something else may own the port (then ours dies on bind): re-check.
                time.sleep(0.05)
                self._check_alive()
                return
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server, wait ``timeout_s``, then SIGKILL; reaps it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_process(proc, timeout_s)

    async def astop(self, timeout_s: float = 10.0) -> None:
        """Async :meth:`stop`."""
        await asyncio.to_thread(self.stop, timeout_s)

    def restart(self, timeout_s: float = 20.0) -> None:
        """Stop then start on the same port."""
        self.stop()
        self.start(timeout_s)

    # ----------------------------------------------------------------- context manager
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
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
        return f"{type(self).__name__}({self._host}:{self._port}, {state})"
