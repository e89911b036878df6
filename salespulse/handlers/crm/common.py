"""What every CRM normaliser shares: the result type, field errors that name the vendor's field, time parsing.

A normaliser is a pure function ``(raw body, mapping) -> Normalised``. It raises :class:`Unnormalisable`
(listing every bad vendor field) when the payload cannot be turned into canonical events; nothing from such a
request is published. Vendor events it does not handle are listed in ``Normalised.ignored`` by kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import ValidationError

from salespulse.models.errors import field_errors
from salespulse.models.events import (
    EARLIEST_OCCURRED_AT,
    LATEST_OCCURRED_AT,
    MAX_FUTURE_SKEW,
    Event,
    EventAdapter,
)


@dataclass
class Normalised:
    """The canonical events of one request, and the kinds of the vendor events it ignored."""

    events: list[Event] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: Vendor events kept whole for an enricher (``salespulse.crm.raw``) instead of normalised now.
    deferred: int = 0


class Unnormalisable(Exception):
    """The payload cannot be normalised; ``errors`` name each vendor field (``[3].propertyValue``)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class FieldProblem(Exception):
    """One bad vendor field; collected into :class:`Unnormalisable` by :func:`collect`."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unnormalisable([{"field": "", "message": f"body is not JSON: {exc}"}]) from None


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldProblem(path, "expected a JSON object")
    return value


def id_text(value: Any, path: str, required: bool = True) -> str | None:
    """A CRM id (string or integer) as text; bool, float and empty values are refused."""
    if value is None or value == "":
        if required:
            raise FieldProblem(path, "required id is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldProblem(path, "expected an id (string or integer)")
    text = str(value).strip()
    if not text or len(text) > 128:
        raise FieldProblem(path, "an id must have 1 to 128 characters")
    return text


def text(value: Any, path: str, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise FieldProblem(path, "required field is missing")
        return None
    if not isinstance(value, str):
        raise FieldProblem(path, "expected a string")
    return value


def number(value: Any, path: str) -> float | None:
    """A number that may come as a JSON number or a numeric string (HubSpot's ``propertyValue``); "" is None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldProblem(path, "expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise FieldProblem(path, f"expected a number, got {value[:40]!r}") from None
    raise FieldProblem(path, "expected a number")


def epoch_ms(value: Any, path: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldProblem(path, "expected epoch milliseconds")
    return _bounded(value / 1000, path)


def epoch_s(value: Any, path: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldProblem(path, "expected epoch seconds")
    return _bounded(float(value), path)


def _bounded(seconds: float, path: str) -> datetime:
    if not EARLIEST_OCCURRED_AT.timestamp() <= seconds < LATEST_OCCURRED_AT.timestamp():
        raise FieldProblem(path, f"time out of range ({EARLIEST_OCCURRED_AT.year}–{LATEST_OCCURRED_AT.year - 1})")
    return datetime.fromtimestamp(seconds, timezone.utc)


def utc_time(value: Any, path: str) -> datetime:
    """An ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` time; without an offset it is UTC (Pipedrive, Close)."""
    if not isinstance(value, str):
        raise FieldProblem(path, "expected a date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FieldProblem(path, f"not a date-time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if not EARLIEST_OCCURRED_AT <= parsed < LATEST_OCCURRED_AT:
        raise FieldProblem(path, "time out of range")
    return parsed


def event(where: str, **fields: Any) -> Event:
    """Validate one canonical event built from the vendor item at ``where``; errors name that item."""
    data = {name: value for name, value in fields.items() if value is not None}
    try:
        built = EventAdapter.validate_python(data)
    except ValidationError as exc:
        problems = field_errors(exc)
        first = problems[0]
        raise FieldProblem(where, f"{data.get('type')} {first.field}: {first.message}") from None
    if built.occurred_at > datetime.now(timezone.utc) + MAX_FUTURE_SKEW:
        raise FieldProblem(where, f"occurred more than {MAX_FUTURE_SKEW} in the future (clock skew?)")
    return built

