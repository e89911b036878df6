"""Request authentication of each CRM, checked on the raw body before it is parsed; all comparisons constant-time.

Every check raises :class:`salespulse.handlers.signatures.SignatureError` (answered 401) with a message that
never contains the secret or the expected digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from salespulse.handlers.signatures import SignatureError, any_digest_matches, parse_timestamp

#: HubSpot v3: the timestamp (epoch ms) must be at most this old (and at most this far ahead: clock skew).
HUBSPOT_TOLERANCE_MS = 5 * 60 * 1000
#: Close: the timestamp header (epoch seconds) must be within this many seconds of now.
CLOSE_TOLERANCE_S = 5 * 60

#: The percent-escapes HubSpot decodes in the URI before signing v3 (its documented table).
_HUBSPOT_V3_DECODED = ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A", "%2C", "%3B")


def hubspot_v3_uri(uri: str) -> str:
    """The URI as HubSpot signs it in v3: the escapes of its documented table decoded, nothing else."""
    out = uri
    for escape in _HUBSPOT_V3_DECODED:
        decoded = unquote(escape)
        out = out.replace(escape, decoded).replace(escape.lower(), decoded)
    return out


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, method + decoded URI + body + timestamp))."""
    message = method.encode() + hubspot_v3_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def hubspot_v2_signature(secret: str, method: str, uri: str, body: bytes) -> str:
    """hex(SHA-256(secret + method + URI + body))."""
    return hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()


def hubspot_v1_signature(secret: str, body: bytes) -> str:
    """hex(SHA-256(secret + body))."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def verify_hubspot(
    secret: str,
    method: str,
    uris: Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    now_ms: float | None = None,
) -> str:
    """Accept a HubSpot request signed v3 (preferred when present), else v2 or v1; returns the version used.

    ``uris`` are the full URLs the request may have been sent to (behind a proxy the scheme and host
    HubSpot used can differ from what the server sees); one must match.
    """
    v3 = headers.get("X-HubSpot-Signature-v3")
    if v3:
        raw_ts = headers.get("X-HubSpot-Request-Timestamp", "")
        ts = parse_timestamp(raw_ts, "X-HubSpot-Request-Timestamp is missing or not epoch milliseconds")
        current = time.time() * 1000 if now_ms is None else now_ms
        if abs(current - ts) > HUBSPOT_TOLERANCE_MS:
            raise SignatureError("X-HubSpot-Request-Timestamp is more than 5 minutes away from now")
        expected = [hubspot_v3_signature(secret, method, uri, body, raw_ts) for uri in uris]
        if not any(any_digest_matches(candidate, [v3]) for candidate in expected):
            raise SignatureError("X-HubSpot-Signature-v3 does not match the request")
        return "v3"
    signature = headers.get("X-HubSpot-Signature")
    version = headers.get("X-HubSpot-Signature-Version", "v1")
    if not signature:
        raise SignatureError("missing X-HubSpot-Signature-v3 (or X-HubSpot-Signature) header")
    if version == "v2":
        candidates = [hubspot_v2_signature(secret, method, uri, body) for uri in uris]
    elif version == "v1":
        candidates = [hubspot_v1_signature(secret, body)]
    else:
        raise SignatureError("X-HubSpot-Signature-Version must be v1 or v2")
    if not any(any_digest_matches(candidate, [signature.lower()]) for candidate in candidates):
        raise SignatureError(f"X-HubSpot-Signature ({version}) does not match the request")
    return version


def close_signature(key_hex: str, timestamp: str, body: bytes) -> str:
    """hex(HMAC-SHA256(bytes.fromhex(key), timestamp + body)), as Close signs webhooks."""
    return hmac.new(bytes.fromhex(key_hex), timestamp.encode() + body, hashlib.sha256).hexdigest()


def verify_close(key_hex: str, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
    """Accept a Close request whose ``close-sig-hash`` matches and whose ``close-sig-timestamp`` is recent."""
    raw_ts = headers.get("close-sig-timestamp", "")
    signature = headers.get("close-sig-hash", "")
    if not raw_ts or not signature:
        raise SignatureError("missing close-sig-hash or close-sig-timestamp header")
    ts = parse_timestamp(raw_ts, "close-sig-timestamp is not epoch seconds")
    current = time.time() if now is None else now
    if abs(current - ts) > CLOSE_TOLERANCE_S:
        raise SignatureError(f"close-sig-timestamp is more than {CLOSE_TOLERANCE_S} s away from now")
    if not any_digest_matches(close_signature(key_hex, raw_ts, body), [signature.lower()]):
        raise SignatureError("close-sig-hash does not match the body")


def verify_basic_auth(expected_user_password: str, authorization: str | None) -> None:
    """Accept ``Authorization: Basic base64(user:password)`` equal to the configured pair (Pipedrive)."""
    if not authorization or not authorization[:6].lower() == "basic ":
        raise SignatureError("missing HTTP Basic Authorization header")
    try:
        given = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Authorization header is not valid base64") from None
    if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected_user_password.encode()).digest()):
        raise SignatureError("wrong user or password")
