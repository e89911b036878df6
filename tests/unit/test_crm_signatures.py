"""CRM request authentication against the vendors' published test vectors, and what each check refuses."""

from __future__ import annotations

import base64
import subprocess

import pytest

from salespulse.handlers.crm.signatures import (
    close_signature,
    hubspot_v1_signature,
    hubspot_v2_signature,
    hubspot_v3_signature,
    hubspot_v3_uri,
    verify_basic_auth,
    verify_close,
    verify_hubspot,
)
from salespulse.handlers.signatures import SignatureError

# HubSpot's documented examples (developers.hubspot.com, "Validating requests") and the test data of its
# official Python client (hubspot-api-python tests/spec/utils/test_signature.py).
HS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_DOC_V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
    b'"changeFlag":"NEW","appId":54321}]'
)
HS_URI = "https://www.example.com/webhook_uri"
SDK_BODY = b"{'example_field':'example_value'}"


def test_hubspot_v1_matches_the_documented_example() -> None:
    expected = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    assert hubspot_v1_signature(HS_SECRET, HS_DOC_V1_BODY) == expected
    headers = {"X-HubSpot-Signature": expected, "X-HubSpot-Signature-Version": "v1"}
    assert verify_hubspot(HS_SECRET, "POST", [HS_URI], HS_DOC_V1_BODY, headers) == "v1"


def test_hubspot_v2_matches_the_documented_get_and_post_examples() -> None:
    get = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    post = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
    assert hubspot_v2_signature(HS_SECRET, "GET", HS_URI, b"") == get
    assert hubspot_v2_signature(HS_SECRET, "POST", HS_URI, b'{"example_field":"example_value"}') == post
    headers = {"X-HubSpot-Signature": post, "X-HubSpot-Signature-Version": "v2"}
    body = b'{"example_field":"example_value"}'
    assert verify_hubspot(HS_SECRET, "POST", ["http://proxy/other", HS_URI], body, headers) == "v2"


def test_hubspot_signatures_match_the_official_client_test_vectors() -> None:
    assert hubspot_v1_signature(HS_SECRET, SDK_BODY) == "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
    assert (
        hubspot_v2_signature(HS_SECRET, "POST", HS_URI, SDK_BODY)
        == "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
    )
    assert (
        hubspot_v3_signature(HS_SECRET, "POST", HS_URI, SDK_BODY, "15000000")
        == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
    )


def test_hubspot_v3_vector_verifies_at_its_timestamp_and_is_refused_five_minutes_later() -> None:
    headers = {"X-HubSpot-Signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
               "X-HubSpot-Request-Timestamp": "15000000"}
    assert verify_hubspot(HS_SECRET, "POST", [HS_URI], SDK_BODY, headers, now_ms=15000000 + 299_000) == "v3"
    with pytest.raises(SignatureError, match="5 minutes"):
        verify_hubspot(HS_SECRET, "POST", [HS_URI], SDK_BODY, headers, now_ms=15000000 + 301_000)
    with pytest.raises(SignatureError, match="does not match"):
        verify_hubspot(HS_SECRET, "POST", [HS_URI], SDK_BODY + b" ", headers, now_ms=15000000)
    with pytest.raises(SignatureError, match="does not match"):
        verify_hubspot("other-secret", "POST", [HS_URI], SDK_BODY, headers, now_ms=15000000)


def test_hubspot_v3_decodes_only_the_documented_escapes_in_the_uri() -> None:
    uri = "https://x.example/webhooks/hubspot?a=b%3Ac%2Fd%40e%21%24%27%28%29%2A%2C%3B%3F&s=%20%25"
    assert hubspot_v3_uri(uri) == "https://x.example/webhooks/hubspot?a=b:c/d@e!$'()*,;?&s=%20%25"
    signature = hubspot_v3_signature(HS_SECRET, "POST", uri, b"[]", "1")
    expected = base64.b64encode(
        __import__("hmac").new(HS_SECRET.encode(), b"POST" + hubspot_v3_uri(uri).encode() + b"[]1", "sha256").digest()
    ).decode()
    assert signature == expected


def test_hubspot_without_any_signature_or_with_an_unknown_version_is_refused() -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify_hubspot(HS_SECRET, "POST", [HS_URI], b"[]", {})
    with pytest.raises(SignatureError, match="v1 or v2"):
        verify_hubspot(HS_SECRET, "POST", [HS_URI], b"[]", {"X-HubSpot-Signature": "x", "X-HubSpot-Signature-Version": "v9"})
    with pytest.raises(SignatureError, match="milliseconds"):
        verify_hubspot(HS_SECRET, "POST", [HS_URI], b"[]", {"X-HubSpot-Signature-v3": "x"})


def test_close_signature_is_hmac_of_timestamp_and_body_with_the_hex_decoded_key() -> None:
    # Close publishes no test vector: this one was computed independently with openssl.
    key = "4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c"
    body = b'{"subscription_id":"whsub_1","event":{"id":"ev_1"}}'
    openssl = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key}"],
        input=b"1700000000" + body, capture_output=True, check=True,
    ).stdout.decode().split()[-1]
    assert close_signature(key, "1700000000", body) == openssl
    headers = {"close-sig-hash": openssl, "close-sig-timestamp": "1700000000"}
    verify_close(key, body, headers, now=1700000000 + 299)
    with pytest.raises(SignatureError, match="away from now"):
        verify_close(key, body, headers, now=1700000000 + 301)
    with pytest.raises(SignatureError, match="does not match"):
        verify_close(key, body + b"x", headers, now=1700000000)
    with pytest.raises(SignatureError, match="missing"):
        verify_close(key, body, {"close-sig-timestamp": "1700000000"}, now=1700000000)


def test_pipedrive_basic_auth_accepts_only_the_configured_pair() -> None:
    good = "Basic " + base64.b64encode(b"salespulse:s3cret").decode()
    verify_basic_auth("salespulse:s3cret", good)
    for header in (None, "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"salespulse:wrong").decode()):
        with pytest.raises(SignatureError):
            verify_basic_auth("salespulse:s3cret", header)
