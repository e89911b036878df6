"""``X-Salespulse-Signature: t=<unix s>,v1=<hex HMAC-SHA256("<t>.<body>")>`` (CONTRACT.md, HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from salespulse.handlers.signatures import SIGNATURE_HEADER, SignatureError, sign, verify

SECRET = "whsec_test"
BODY = b'{"event_id":"e1","type":"lead.created","occurred_at":"2026-11-22T09:30:00Z","lead_id":"L1"}'
T = 1_795_000_000
TOLERANCE = 300


def digest(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_header_name_is_the_contract_one() -> None:
    assert SIGNATURE_HEADER == "X-Salespulse-Signature"


def test_sign_produces_t_and_v1_hmac_of_timestamp_dot_body() -> None:
    header = sign(SECRET, BODY, timestamp=T)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert header == f"t={T},v1={digest(SECRET, BODY, T)}"


def test_sign_defaults_to_the_current_time() -> None:
    header = sign(SECRET, BODY)
    verify(SECRET, BODY, header, TOLERANCE)  # now, within tolerance


def test_signed_body_verifies() -> None:
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T)


def test_empty_body_signs_and_verifies() -> None:
    verify(SECRET, b"", sign(SECRET, b"", timestamp=T), TOLERANCE, now=T + 1)


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify("other-secret", BODY, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T)


@pytest.mark.parametrize(
    "tampered",
    [BODY.replace(b"L1", b"L2"), BODY + b" ", BODY[:-1], b"", BODY.upper()],
    ids=["changed", "appended", "truncated", "empty", "case"],
)
def test_tampered_body_is_rejected(tampered: bytes) -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, tampered, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T)


def test_changed_timestamp_with_the_old_digest_is_rejected() -> None:
    header = f"t={T + 1},v1={digest(SECRET, BODY, T)}"
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)


@pytest.mark.parametrize("skew", [-TOLERANCE, -1, 0, 1, TOLERANCE])
def test_timestamp_within_300_seconds_either_way_is_accepted(skew: int) -> None:
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T + skew)


@pytest.mark.parametrize("skew", [TOLERANCE + 1, 3600, -(TOLERANCE + 1), -3600], ids=["late", "hour-late", "early", "hour-early"])
def test_timestamp_beyond_300_seconds_either_way_is_rejected(skew: int) -> None:
    # a replayed old request (now well after t) and a request signed in the future (now well before t)
    with pytest.raises(SignatureError, match="300 s"):
        verify(SECRET, BODY, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T + skew)


def test_fractional_now_just_past_the_tolerance_is_rejected() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, BODY, sign(SECRET, BODY, timestamp=T), TOLERANCE, now=T + TOLERANCE + 0.5)


def test_stale_timestamp_is_rejected_even_with_a_correct_digest() -> None:
    header = f"t={T - 10_000},v1={digest(SECRET, BODY, T - 10_000)}"
    with pytest.raises(SignatureError, match="away from now"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_is_rejected_naming_the_header(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing X-Salespulse-Signature"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "sha256=abcdef",
        f"v1={digest(SECRET, BODY, T)}",  # no timestamp
        f"t={T}",  # no digest
        f"t={T},v0={digest(SECRET, BODY, T)}",  # an unknown scheme only
        ",",
    ],
    ids=["garbage", "other-format", "no-t", "no-v1", "v0-only", "comma"],
)
def test_malformed_header_is_rejected(header: str) -> None:
    with pytest.raises(SignatureError, match="needs t=<unix seconds> and v1=<hex digest>"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)


def test_header_with_the_wrong_separator_is_rejected() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, BODY, f"t={T};v1={digest(SECRET, BODY, T)}", TOLERANCE, now=T)


@pytest.mark.parametrize("t", ["abc", "1.5", "", "1e9"])
def test_non_integer_timestamp_is_rejected(t: str) -> None:
    with pytest.raises(SignatureError, match="not an integer"):
        verify(SECRET, BODY, f"t={t},v1={digest(SECRET, BODY, T)}", TOLERANCE, now=T)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_one_matching_v1_among_several_is_accepted(position: int) -> None:
    candidates = ["0" * 64, "f" * 64]
    candidates.insert(position, digest(SECRET, BODY, T))
    header = f"t={T}," + ",".join(f"v1={c}" for c in candidates)
    verify(SECRET, BODY, header, TOLERANCE, now=T)


def test_secret_rotation_old_and_new_signature_both_verify_with_either_secret() -> None:
    header = f"t={T},v1={digest('old', BODY, T)},v1={digest('new', BODY, T)}"
    verify("old", BODY, header, TOLERANCE, now=T)
    verify("new", BODY, header, TOLERANCE, now=T)
    with pytest.raises(SignatureError):
        verify("third", BODY, header, TOLERANCE, now=T)


def test_several_v1_values_none_matching_are_rejected() -> None:
    header = f"t={T},v1={'0' * 64},v1={digest('other', BODY, T)},v1="
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)


def test_spaces_around_parts_and_unknown_schemes_are_tolerated() -> None:
    header = f" t={T} , v0=deadbeef , v1={digest(SECRET, BODY, T)} "
    verify(SECRET, BODY, header, TOLERANCE, now=T)


def test_truncated_digest_is_rejected() -> None:
    header = f"t={T},v1={digest(SECRET, BODY, T)[:32]}"
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, header, TOLERANCE, now=T)
