"""Logging of every role: one line per record on stderr, as text or JSON, never wrapped.

Faust, aiokafka and mode log their internals at INFO (subscription and highwater tables, every
rebalance step), and every service logs its start and stop: all of that only with ``--log-level debug``,
so the console shows salespulse's own lines. The same dictConfig is handed to mode's Worker, which re-applies it at start.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from mode import Service

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: Libraries whose INFO lines are internals; shown only with ``--log-level debug``.
QUIET_LOGGERS = ("faust", "aiokafka", "kafka", "mode")


class DropBenignFaustWarnings(logging.Filter):
    """Drops Faust's "Missing sensor state for rebalance" warning.

    salespulse registers no Faust sensors, so the state Faust keeps per rebalance is an empty dict,
    which Faust takes for missing and warns about on every rebalance: it says nothing is wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Logged through the app's own logger (a Faust App subclass lives in salespulse), so match the text.
        return "Missing sensor state for rebalance" not in str(record.msg)


def logging_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``--log-level`` and ``--log-format``."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    formatters: dict[str, Any] = {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,  # ISO 8601, UTC
        },
    }
    library_level = "DEBUG" if level == "debug" else "WARNING"
    return {
        "version": 1,
        # Loggers created at import time (before this runs) must keep working.
        "disable_existing_loggers": False,
        "filters": {"benign_faust": {"()": f"{__name__}.DropBenignFaustWarnings"}},
        "formatters": {fmt: formatters[fmt]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": fmt,
                "filters": ["benign_faust"],
            }
        },
        "loggers": {name: {"level": library_level} for name in QUIET_LOGGERS},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def setup_logging(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """Apply :func:`logging_config` now (before anything starts) and return it for mode's Worker."""
    config = logging_config(level, fmt)
    logging.config.dictConfig(config)
    if level != "debug":
        # mode's knob for the "Starting..." / "Stopping..." line of every service (Faust's included), read
        # when a service is created: those lines only at debug.
        Service.mundane_level = "debug"
    return config
