"""Malformed signature headers are refused as bad signatures (401), never raise anything else (a 500)."""

from __future__ import annotations

import pytest

from salespulse.handlers.crm.signatures import verify_close, verify_hubspot
from salespulse.handlers.signatures import SignatureError, sign, verify

HUGE = "1" * 400
NOW = 1_700_000_000


@pytest.mark.parametrize(
    "header",
    [f"t={HUGE},v1=00", "t=1700000000,v1=é", "t=1700000000,v1=\udcff", "t=١٧٠٠٠٠٠٠٠٠,v1=00", "t=-5,v1=00"],
    ids=["huge-timestamp", "non-ascii-digest", "surrogate-digest", "arabic-digits", "negative"],
)
def test_generic_signature_header_garbage_is_a_signature_error(header: str) -> None:
    with pytest.raises(SignatureError):
        verify("secret", b"{}", header, 300, now=NOW)


def test_a_valid_generic_signature_still_passes() -> None:
    verify("secret", b"{}", sign("secret", b"{}", NOW), 300, now=NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-HubSpot-Signature-v3": "abc", "X-HubSpot-Request-Timestamp": HUGE},
        {"X-HubSpot-Signature-v3": "\udcff\udcfe", "X-HubSpot-Request-Timestamp": str(NOW * 1000)},
        {"X-HubSpot-Signature": "é", "X-HubSpot-Signature-Version": "v1"},
    ],
    ids=["huge-timestamp", "surrogate-v3", "non-ascii-v1"],
)
def test_hubspot_header_garbage_is_a_signature_error(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        verify_hubspot("secret", "POST", ["https://x/webhooks/hubspot"], b"[]", headers, now_ms=NOW * 1000)


@pytest.mark.parametrize(
    "headers",
    [{"close-sig-timestamp": HUGE, "close-sig-hash": "00"}, {"close-sig-timestamp": str(NOW), "close-sig-hash": "é"}],
    ids=["huge-timestamp", "non-ascii-hash"],
)
def test_close_header_garbage_is_a_signature_error(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        verify_close("00ff", b"{}", headers, now=NOW)
