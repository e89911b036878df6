"""The generic endpoint's signature: ``X-Salespulse-Signature: t=<unix s>,v1=<hex HMAC-SHA256("<t>.<body>")>``."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Salespulse-Signature"


class SignatureError(Exception):
    """The request's signature is missing, malformed, stale or wrong; the message says which."""


#: Digits of an epoch timestamp in a header: milliseconds until the year 2286 fit in 13, so 16 is ample.
_MAX_TIMESTAMP_DIGITS = 16


def parse_timestamp(raw: str, problem: str) -> int:
    """An epoch timestamp from a header: ASCII digits only, at most 16 of them; else ``SignatureError(problem)``."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_TIMESTAMP_DIGITS):
        raise SignatureError(problem)
    return int(raw)


def any_digest_matches(expected: str, candidates: list[str]) -> bool:
    """Whether a candidate equals the expected digest, compared in constant time against every candidate.

    Candidates come from headers and may hold any character: they are compared as UTF-8 bytes, with
    unencodable characters replaced (no digest alphabet has ``?``, so a replacement never matches).
    """
    wanted = expected.encode()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(wanted, candidate.encode("utf-8", errors="replace"))
    return matched


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value a sender puts on ``body`` (``timestamp`` defaults to now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str | None, tolerance_s: int, now: float | None = None) -> None:
    """Accept the raw body only if one ``v1`` matches in constant time and ``t`` is within the tolerance."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = parse_timestamp(value, "signature timestamp is not an integer (unix seconds)")
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t=<unix seconds> and v1=<hex digest>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"signature timestamp is more than {tolerance_s} s away from now")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any_digest_matches(expected, candidates):
        raise SignatureError("signature does not match the body")
