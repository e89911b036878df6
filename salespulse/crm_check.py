"""``salespulse crm check <crm>``: credentials, what the CRM's API shows, and the ``[crm.<crm>]`` mapping.

Each CRM's reader returns a :class:`Discovery` (its pipelines, stages as :class:`StageMapping` with the CRM's
order, its owners); :func:`render_mapping` turns that into the TOML table salespulse loads (checked by loading
it back). HubSpot is read with the official ``hubspot-api-client`` (a CLI may block); the others with plain
HTTP GETs of their documented REST endpoints.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from salespulse.crm_config import CrmSection, StageMapping
from salespulse.handlers.crm.hubspot_enrich import pipeline_stage_mappings, slug
from salespulse.settings import Settings

CRMS = ("hubspot", "pipedrive", "salesforce", "close")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


class CheckFailed(Exception):
    """The check cannot go on: a setting is missing or the CRM refused; the message says what to do."""


@dataclass
class Discovery:
    """What a CRM's API shows: pipelines (id, name), stage mappings by CRM stage id, owners (id, display name)."""

    pipelines: list[tuple[str, str]] = field(default_factory=list)
    stages: dict[str, StageMapping] = field(default_factory=dict)
    owners: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _key(text: str) -> str:
    return text if _BARE.match(text) else json.dumps(text)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def render_mapping(crm: str, found: Discovery) -> str:
    """The ``[crm.<crm>]`` TOML table: pipeline names, stages (with order), owners as comments to fill in.

    Owners stay commented: their names are personal data, and a rep id is yours to choose (unmapped, the
    CRM's owner id is the rep id)."""
    lines = [f"# written by `salespulse crm check {crm}`", f"[crm.{crm}]"]
    if found.pipelines:
        pairs = ", ".join(f"{_key(pid)} = {_value(name)}" for pid, name in found.pipelines)
        lines.append(f"pipelines = {{ {pairs} }}")
    if found.owners:
        lines.append("# owners: CRM owner id = your rep id (unmapped, the owner id is the rep id)")
        lines += [f"# {_key(oid)} = \"rep-…\"  # {name}" for oid, name in found.owners]
    lines.append(f"[crm.{crm}.stages]")
    for stage_id, stage in found.stages.items():
        fields = stage.model_dump(exclude_none=True, exclude_defaults=True)
        fields = {"pipeline": stage.pipeline, "stage": stage.stage, **fields}
        inner = ", ".join(f"{name} = {_value(v)}" for name, v in fields.items())
        lines.append(f"{_key(stage_id)} = {{ {inner} }}")
    text = "\n".join(lines) + "\n"
    CrmSection.model_validate(tomllib.loads(text).get("crm", {}))  # what we write must load
    return text


# --- HubSpot (the official client) --------------------------------------------------------------------


def discover_hubspot(settings: Settings) -> Discovery:
    if settings.hubspot_access_token is None or not settings.hubspot_access_token.get_secret_value():
        raise CheckFailed("SALESPULSE_HUBSPOT_ACCESS_TOKEN is not set: create a private app (scopes "
                          "crm.objects.contacts.read, crm.objects.deals.read, crm.objects.owners.read) and set its token")
    from hubspot import HubSpot
    from hubspot.crm.owners.exceptions import ApiException as OwnersError
    from hubspot.crm.pipelines.exceptions import ApiException as PipelinesError

    client = HubSpot(access_token=settings.hubspot_access_token.get_secret_value(), host=settings.hubspot_api_url)
    try:
        pipelines = client.crm.pipelines.pipelines_api.get_all(object_type="deals").to_dict()["results"]
        owners: list[dict[str, Any]] = []
        after = None
        while True:
            page = client.crm.owners.owners_api.get_page(limit=100, after=after).to_dict()
            owners += page.get("results") or []
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
    except (PipelinesError, OwnersError) as exc:
        raise CheckFailed(f"HubSpot answered {exc.status} {exc.reason}: "
                          + ("check SALESPULSE_HUBSPOT_ACCESS_TOKEN and its scopes" if exc.status in (401, 403)
                             else "see the message above")) from None
    except Exception as exc:  # connection refused, DNS, TLS
        raise CheckFailed(f"cannot reach HubSpot at {settings.hubspot_api_url}: {type(exc).__name__}: {exc}") from None
    # The client's models use snake_case; the mapping reads HubSpot's JSON names.
    shaped = [{"id": p["id"], "label": p["label"], "archived": p.get("archived"),
               "stages": [{"id": s["id"], "label": s["label"], "displayOrder": s.get("display_order"),
                           "metadata": s.get("metadata") or {}, "archived": s.get("archived")}
                          for s in p.get("stages") or []]} for p in pipelines]
    found = Discovery(stages=pipeline_stage_mappings(shaped))
    found.pipelines = [(p["id"], slug(p["label"], p["id"])) for p in shaped if not p.get("archived")]
    found.owners = [(str(o["id"]), " ".join(filter(None, (o.get("first_name"), o.get("last_name")))) or "?")
                    for o in owners if not o.get("archived")]
    if settings.hubspot_client_secret is None:
        found.notes.append("SALESPULSE_HUBSPOT_CLIENT_SECRET is not set: /webhooks/hubspot is not served")
    return found


# --- the others (documented REST endpoints) ------------------------------------------------------------


async def _get(session: aiohttp.ClientSession, url: str, what: str) -> Any:
    try:
        async with session.get(url) as response:
            if response.status in (401, 403):
                raise CheckFailed(f"{what}: {response.status}: the credentials were refused")
            if response.status != 200:
                raise CheckFailed(f"{what}: {url.split('?')[0]} answered {response.status}")
            return await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise CheckFailed(f"{what}: cannot reach {url.split('?')[0]}: {type(exc).__name__}: {exc}") from None


def _require(value: Any, message: str) -> str:
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if not text:
        raise CheckFailed(message)
    return str(text)


async def _pipedrive(settings: Settings) -> Discovery:
    token = _require(settings.pipedrive_api_token, "SALESPULSE_PIPEDRIVE_API_TOKEN is not set (Pipedrive: "
                     "Personal preferences → API)")
    base = settings.pipedrive_api_url
    async with aiohttp.ClientSession(headers={"x-api-token": token}, timeout=aiohttp.ClientTimeout(total=20)) as s:
        pipelines = (await _get(s, f"{base}/api/v1/pipelines", "Pipedrive")).get("data") or []
        stages = (await _get(s, f"{base}/api/v1/stages", "Pipedrive")).get("data") or []
        users = (await _get(s, f"{base}/api/v1/users", "Pipedrive")).get("data") or []
    names = {str(p["id"]): slug(str(p.get("name") or ""), str(p["id"])) for p in pipelines}
    found = Discovery(pipelines=list(names.items()))
    for st in stages:
        if st.get("active_flag") is False:
            continue
        probability = st.get("deal_probability")
        found.stages[str(st["id"])] = StageMapping(
            pipeline=names.get(str(st.get("pipeline_id")), str(st.get("pipeline_id"))),
            stage=slug(str(st.get("name") or ""), str(st["id"])),
            probability=probability / 100 if isinstance(probability, (int, float)) else None,
            order=st.get("order_nr") if isinstance(st.get("order_nr"), int) else None,
        )
    found.owners = [(str(u["id"]), str(u.get("name") or "?")) for u in users if u.get("active_flag", True)]
    if settings.pipedrive_basic_auth is None:
        found.notes.append("SALESPULSE_PIPEDRIVE_BASIC_AUTH is not set: /webhooks/pipedrive is not served")
    return found


SALESFORCE_API = "v60.0"


async def _salesforce(settings: Settings) -> Discovery:
    token = _require(settings.salesforce_access_token, "SALESPULSE_SALESFORCE_ACCESS_TOKEN is not set (an OAuth "
                     "access token, e.g. `sf org display --json` → accessToken)")
    base = _require(settings.salesforce_instance_url, "SALESPULSE_SALESFORCE_INSTANCE_URL is not set "
                    "(https://<your domain>.my.salesforce.com)")
    query = f"{base}/services/data/{SALESFORCE_API}/query?q="
    stage_soql = ("SELECT+ApiName,MasterLabel,SortOrder,IsClosed,IsWon,DefaultProbability,IsActive"
                  "+FROM+OpportunityStage")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     timeout=aiohttp.ClientTimeout(total=20)) as s:
        stages = (await _get(s, query + stage_soql, "Salesforce")).get("records") or []
        users = (await _get(s, query + "SELECT+Id,Name+FROM+User+WHERE+IsActive=true", "Salesforce")).get(
            "records") or []
    pipeline = "default"
    found = Discovery(pipelines=[])
    for st in stages:
        if st.get("IsActive") is False:
            continue
        probability = st.get("DefaultProbability")
        found.stages[str(st["ApiName"])] = StageMapping(
            pipeline=pipeline, stage=slug(str(st.get("MasterLabel") or ""), str(st["ApiName"])),
            closed=bool(st.get("IsClosed")), won=bool(st.get("IsWon")),
            probability=probability / 100 if isinstance(probability, (int, float)) else None,
            order=st.get("SortOrder") if isinstance(st.get("SortOrder"), int) else None,
        )
    found.owners = [(str(u["Id"]), str(u.get("Name") or "?")) for u in users]
    found.notes.append(f"stages are mapped to the pipeline {pipeline!r} (edit it per sales process)")
    if settings.salesforce_org_id is None:
        found.notes.append("SALESPULSE_SALESFORCE_ORG_ID is not set: the Salesforce endpoints are not served")
    return found


async def _close(settings: Settings) -> Discovery:
    key = _require(settings.close_api_key, "SALESPULSE_CLOSE_API_KEY is not set (Close: Settings → Developer → API keys)")
    base = settings.close_api_url
    auth = aiohttp.BasicAuth(key, "")
    async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=20)) as s:
        pipelines = (await _get(s, f"{base}/api/v1/pipeline/", "Close")).get("data") or []
        users = (await _get(s, f"{base}/api/v1/user/", "Close")).get("data") or []
    found = Discovery()
    for p in pipelines:
        name = slug(str(p.get("name") or ""), str(p["id"]))
        found.pipelines.append((str(p["id"]), name))
        for order, st in enumerate(p.get("statuses") or []):
            kind = st.get("type")
            found.stages[str(st["id"])] = StageMapping(
                pipeline=name, stage=slug(str(st.get("label") or ""), str(st["id"])),
                closed=kind in ("won", "lost"), won=kind == "won", order=order,
            )
    found.owners = [(str(u["id"]), " ".join(filter(None, (u.get("first_name"), u.get("last_name")))) or "?")
                    for u in users]
    if settings.close_signature_key is None:
        found.notes.append("SALESPULSE_CLOSE_SIGNATURE_KEY is not set: /webhooks/close is not served")
    return found


DISCOVER: dict[str, Callable[[Settings], Discovery]] = {
    "hubspot": discover_hubspot,
    "pipedrive": lambda settings: asyncio.run(_pipedrive(settings)),
    "salesforce": lambda settings: asyncio.run(_salesforce(settings)),
    "close": lambda settings: asyncio.run(_close(settings)),
}
