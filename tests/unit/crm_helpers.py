"""Shared helpers of the CRM normaliser tests: events as plain dicts, the way they are written to Kafka."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from salespulse.models.events import Event, event_to_json


def canon(events: Sequence[Event]) -> list[dict]:
    """Events as the JSON dicts ``salespulse.events`` carries (unset optional fields left out)."""
    return [orjson.loads(event_to_json(e)) for e in events]
