"""CRM webhook endpoints (HubSpot, Pipedrive, Salesforce, Close): each served only when its setting is present.

:func:`build_crm_webhooks` wires every enabled vendor's authentication and normaliser into a
:class:`~salespulse.handlers.crm.endpoint.CrmWebhook`; the normalisers themselves are pure functions in the
vendor modules. See docs/crm.md.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web
from prometheus_client import Counter

from salespulse.crm_config import CrmSection
from salespulse.handlers.crm.close import normalise_close
from salespulse.handlers.crm.endpoint import CrmWebhook, EventSink, IgnoredCounter
from salespulse.handlers.crm.hubspot import check_hubspot, normalise_hubspot
from salespulse.handlers.crm.pipedrive import normalise_pipedrive
from salespulse.handlers.crm.salesforce import (
    ACK,
    WrongOrganization,
    check_organization,
    normalise_cdc,
    normalise_outbound,
)
from salespulse.handlers.crm.signatures import verify_basic_auth, verify_close, verify_hubspot
from salespulse.handlers.crm.common import Normalised
from salespulse.handlers.signatures import SIGNATURE_HEADER, SignatureError, verify
from salespulse.settings import SIGNATURE_TOLERANCE_SECONDS, Settings

__all__ = ["CrmWebhook", "IgnoredCounter", "build_crm_webhooks", "request_uris"]


def request_uris(request: web.Request, public_url: str | None) -> list[str]:
    """The full URLs a CRM may have signed: ``public_url`` + path when configured, else https/http + Host."""
    if public_url:
        return [public_url + request.path_qs]
    return [f"{scheme}://{request.host}{request.path_qs}" for scheme in ("https", "http")]


def _soap_ack(_: Normalised | None) -> web.Response:
    return web.Response(body=ACK, status=200, content_type="text/xml", charset="utf-8")


def build_crm_webhooks(
    settings: Settings, crm: CrmSection, sink: EventSink, rejected: Counter, ignored: IgnoredCounter
) -> list[CrmWebhook]:
    """The endpoints of every CRM whose secret or setting is present (the others are not routed: 404)."""
    hooks: list[CrmWebhook] = []
    make = partial(CrmWebhook, sink=sink, rejected=rejected, ignored=ignored)
    if settings.hubspot_client_secret is not None:
        secret = settings.hubspot_client_secret.get_secret_value()

        def hubspot_auth(request: web.Request, body: bytes) -> None:
            verify_hubspot(secret, request.method, request_uris(request, settings.public_url), body, request.headers)

        # With an API token the batch is kept whole and enriched after the answer (docs/crm.md).
        hubspot = check_hubspot if settings.hubspot_access_token is not None else normalise_hubspot
        hooks.append(make("hubspot", "/webhooks/hubspot", hubspot_auth, partial(hubspot, mapping=crm.hubspot)))
    if settings.pipedrive_basic_auth is not None:
        pair = settings.pipedrive_basic_auth.get_secret_value()

        def pipedrive_auth(request: web.Request, _: bytes) -> None:
            verify_basic_auth(pair, request.headers.get("Authorization"))

        hooks.append(
            make("pipedrive", "/webhooks/pipedrive", pipedrive_auth, partial(normalise_pipedrive, mapping=crm.pipedrive))
        )
    if settings.close_signature_key is not None:
        key = settings.close_signature_key.get_secret_value()

        def close_auth(request: web.Request, body: bytes) -> None:
            verify_close(key, body, request.headers)

        hooks.append(make("close", "/webhooks/close", close_auth, partial(normalise_close, mapping=crm.close)))
    if settings.salesforce_org_id is not None:
        org_id = settings.salesforce_org_id
        generic_secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None

        def outbound_auth(_: web.Request, body: bytes) -> None:
            """Outbound messages are unsigned: the OrganizationId inside is their credential (docs/crm.md)."""
            try:
                check_organization(body, org_id)
            except WrongOrganization as exc:
                raise SignatureError(str(exc)) from None

        def cdc_auth(request: web.Request, body: bytes) -> None:
            # CDC reaches salespulse through the user's relay, which signs like any generic sender.
            if generic_secret is not None:
                verify(generic_secret, body, request.headers.get(SIGNATURE_HEADER), SIGNATURE_TOLERANCE_SECONDS)

        hooks.append(
            make("salesforce_outbound", "/webhooks/salesforce/outbound", outbound_auth,
                 partial(normalise_outbound, org_id=org_id, mapping=crm.salesforce), acknowledge=_soap_ack,
                 unauthorized=(WrongOrganization,))
        )
        hooks.append(
            make("salesforce_cdc", "/webhooks/salesforce/cdc", cdc_auth, partial(normalise_cdc, mapping=crm.salesforce),
                 authenticated=generic_secret is not None)
        )
    return hooks
