"""Pydantic validation errors as the fields a sender can fix, for HTTP answers and dead letters alike."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import ValidationError


class FieldError(NamedTuple):
    """One problem with one field of one event."""

    field: str
    message: str
    type: str


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Each error with its dotted field path; the union member pydantic tried is not a field, so it is left out."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        if loc and "." in loc[0]:
            loc = loc[1:]  # the event type the discriminated union matched
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
        errors.append(FieldError(".".join(loc), error["msg"], error["type"]))
    return errors
