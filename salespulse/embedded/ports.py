"""Port and child-process helpers shared by the embedded broker and Redis.

Process-lifetime guarantees for every server spawned with :func:`spawn_tied_to_parent`:

* it runs in its own session / process group (``start_new_session=True``), so a
  terminal Ctrl-C does not reach it directly; we decide how it stops;
* an ``atexit`` hook terminates every still-running child on normal interpreter exit;
* on Linux the child gets ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so it is sent
  SIGTERM when the parent dies in any way, including SIGKILL.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
process. Children are therefore always forked from one long-lived daemon thread
owned by this module, so calling ``start()`` from a short-lived thread (for
example ``asyncio.to_thread``) does not kill the server when that thread ends.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import ctypes.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "free_port",
    "wait_for_port",
    "spawn_tied_to_parent",
    "terminate_process",
    "pid_alive",
    "log_tail",
]

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, then release).

    Another process may grab it before you bind it; good enough for tests and local runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until a TCP connect to ``host:port`` succeeds.

    Polls every 20 ms. Raises :class:`TimeoutError` if nothing accepts within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(1.0, remaining))):
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"nothing accepted TCP connections on {host}:{port} within {timeout_s:.1f}s "
                f"(last error: {last_error!r})"
            )
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an unreaped, already-dead process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # no /proc (macOS) or vanished in between
        return os.path.exists(f"/proc/{pid}") if sys.platform.startswith("linux") else True
    # Format: "pid (comm) S ..." where comm may contain spaces/parens: state follows the last ')'.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def log_tail(log_path: Path | None, max_bytes: int = 4000) -> str:
    """Return the last ``max_bytes`` of ``log_path`` as text (or a note why there is none)."""
    if log_path is None:
        return "<no log: pass log_path=... to capture the server output>"
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<log {log_path} unreadable: {exc}>"


# --------------------------------------------------------------------------- pdeathsig


def _load_prctl() -> Callable[..., int] | None:
    """Resolve libc ``prctl`` in the parent (never inside the forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    """Build the ``preexec_fn`` that ties the child to ``parent_pid`` via PR_SET_PDEATHSIG."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def _preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died before prctl took effect: then nobody will signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return _preexec


# --------------------------------------------------------------------------- spawner thread

_spawn_queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
    queue.SimpleQueue()
)
_spawner_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _spawner_loop() -> None:
    while True:
        fn, fut = _spawn_queue.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            fut.set_exception(exc)


def _run_in_spawner(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the module's daemon spawner thread, which lives until process exit."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(
                target=_spawner_loop, name="salespulse-embedded-spawner", daemon=True
            )
            _spawner.start()
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
    _spawn_queue.put((fn, fut))
    return fut.result()


# --------------------------------------------------------------------------- spawn / stop

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


def spawn_tied_to_parent(
    cmd: Sequence[str],
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` so that it cannot outlive this process (see module docstring).

    stdout and stderr are appended to ``log_path`` (created with its parents) or
    discarded when it is None. The returned process is stopped at interpreter exit
    unless :func:`terminate_process` was called first.
    """
    log_fh: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log_path, "ab")  # noqa: SIM115 - closed right after the fork
    out: int | IO[bytes] = log_fh if log_fh is not None else subprocess.DEVNULL
    preexec = _make_preexec(os.getpid())

    def _popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log_fh is not None else subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
            env=env,
            cwd=cwd,
        )

    try:
        proc: subprocess.Popen[bytes] = _run_in_spawner(_popen)
    finally:
        if log_fh is not None:
            log_fh.close()
    with _live_lock:
        _live.add(proc)
    return proc


def terminate_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM ``proc``, wait up to ``timeout_s``, then SIGKILL it; always reaps it. Idempotent."""
    try:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5.0)
    finally:
        with _live_lock:
            _live.discard(proc)


@atexit.register
def _terminate_all_live() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        try:
            terminate_process(proc, timeout_s=5.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
