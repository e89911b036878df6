"""What the live board shows, read from the Redis outputs (docs/outputs.md) into one JSON-ready dict.

Everything comes from keys the workers publish (absolute, merged totals), so the board holds no state
of its own and any number of boards can read the same Redis:

- speed to lead today: the teams' ``lead_response`` day hashes, summed field by field (additive
  fields only), quantiles from the merged histogram as the merge script computes them;
- leads waiting now: ``salespulse:lead_response:awaiting:p<partition>`` (the oldest per partition);
- alert feed: ``salespulse:alerts:recent``; today's counts per rule and team: ``salespulse:alerts:counts:<day>``;
- funnel: the pipeline scope's month hash (``entries:<stage>``) and open pipeline hash
  (``deals:<stage>``), stages in the configured order, unknown stages after them;
- pipeline and forecast against quota: the open pipeline hashes and the reps' month hashes;
- activity against target: the reps' activity day hashes (``target:<kind>``).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis

from salespulse.config import Config
from salespulse.families.lead_response.spec import ADDITIVE_FIELDS, derived_fields
from salespulse.families.pipeline.pipelines import Pipelines
from salespulse.outputs.alerts import ALERT_COUNTS_PREFIX, RECENT_ALERTS_KEY
from salespulse.outputs.aggregates import AWAITING_PREFIX

#: How many rows of each list the board shows (the counts cover the rest).
WAITING_SHOWN = 25
ALERTS_SHOWN = 30


@dataclass(frozen=True)
class BoardView:
    """The config the board needs: time zone, SLA, currency, stage order, names and targets."""

    tz: ZoneInfo
    sla_s: float
    currency: str = "USD"
    pipelines: Pipelines = field(default_factory=Pipelines)
    rep_names: Mapping[str, str] = field(default_factory=dict)
    team_of_rep: Mapping[str, str] = field(default_factory=dict)
    #: (rep, "day") -> {kind: target}; None without ``[targets]``.
    targets: Callable[[str, str], Mapping[str, int]] | None = None

    @classmethod
    def from_config(cls, config: Config, tz: ZoneInfo, env_sla_s: int) -> "BoardView":
        return cls(
            tz=tz,
            sla_s=config.lead_response.effective_sla_seconds(env_sla_s),
            currency=config.currency,
            pipelines=config.pipeline_specs(),
            rep_names=dict(config.rep_names),
            team_of_rep=dict(config.team_of_rep),
            targets=config.targets_for if config.targets.configured else None,
        )

    @property
    def known_reps(self) -> set[str]:
        """The reps the config names (with a name or a team)."""
        return set(self.rep_names) | set(self.team_of_rep)

    def rep_name(self, rep: str) -> str:
        return self.rep_names.get(rep, rep)


def _number(value: bytes | str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): _number(v) for k, v in raw.items()}


class BoardReader:
    """Reads one board snapshot from Redis (pipelined reads of the keys a few patterns match).

    The keys of a pattern come from a ``SCAN`` at most every ``rescan_s``; in between, keys the workers
    announce on ``salespulse:updates`` (``saw``) join at once, so a snapshot costs no scan of the keyspace.
    """

    def __init__(self, redis_client: aioredis.Redis, view: BoardView, rescan_s: float = 30.0) -> None:
        self.redis = redis_client
        self.view = view
        self.rescan_s = rescan_s
        self._keys: dict[str, tuple[float, set[str]]] = {}

    def saw(self, keys: Iterable[str]) -> None:
        """Keys announced as written: add them to the patterns they match."""
        for key in keys:
            if "#" in key:
                continue
            for pattern, (_, known) in self._keys.items():
                if fnmatch.fnmatchcase(key, pattern):
                    known.add(key)

    async def _scan(self, pattern: str) -> list[str]:
        scanned_at, known = self._keys.get(pattern, (0.0, set()))
        if time.monotonic() - scanned_at >= self.rescan_s:
            found = {key.decode() if isinstance(key, bytes) else key
                     async for key in self.redis.scan_iter(pattern, count=1000)}
            known = {key for key in found if "#" not in key}
            self._keys[pattern] = (time.monotonic(), known)
        return sorted(known)

    async def _hashes(self, keys: Iterable[str]) -> dict[str, dict[str, float]]:
        keys = list(keys)
        if not keys:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            values = await pipe.execute()
        return {key: _decode(value) for key, value in zip(keys, values)}

    async def read(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        local = datetime.fromtimestamp(now, self.view.tz)
        today, month = local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")
        waiting = await self._waiting()
        return {
            "generated_at": now,
            "today": today,
            "month": month,
            "timezone": str(self.view.tz),
            "currency": self.view.currency,
            "sla_s": self.view.sla_s,
            "speed_to_lead": await self._speed_to_lead(today, waiting["count"]),
            "waiting": waiting,
            "alerts": await self._alerts(),
            "alert_counts": await self._alert_counts(today),
            "funnel": await self._funnel(month),
            "forecast": await self._forecast(month),
            "activity": await self._activity(today),
        }

    async def _speed_to_lead(self, today: str, awaiting: int) -> dict[str, Any]:
        merged: dict[str, float] = {}
        for fields in (await self._hashes(await self._scan(f"salespulse:lead_response:team:*:day:{today}"))).values():
            for name in ADDITIVE_FIELDS:
                merged[name] = merged.get(name, 0.0) + fields.get(name, 0.0)
        derived = derived_fields(merged)
        return {
            "created": int(merged.get("created", 0)),
            "touched": int(merged.get("touched", 0)),
            "within_sla": int(merged.get("within_sla", 0)),
            "within_sla_rate": derived.get("within_sla_rate"),
            "p50_s": derived.get("p50_s"),
            "p90_s": derived.get("p90_s"),
            "awaiting": awaiting,
        }

    async def _waiting(self) -> dict[str, Any]:
        keys = await self._scan(f"{AWAITING_PREFIX}*")
        values = await self.redis.mget(keys) if keys else []
        count, leads = 0, []
        for value in values:
            if value is None:
                continue  # expired between the scan and the read
            snapshot = orjson.loads(value)
            count += int(snapshot.get("count", 0))
            leads += snapshot.get("leads", [])
        leads.sort(key=lambda lead: (lead["created_at"], lead["lead_id"]))
        for lead in leads:
            lead["rep_name"] = self.view.rep_name(lead["rep_id"])
        return {"count": count, "leads": leads[:WAITING_SHOWN]}

    async def _alerts(self) -> list[dict[str, Any]]:
        raw = await self.redis.zrevrange(RECENT_ALERTS_KEY, 0, ALERTS_SHOWN - 1)
        alerts = [orjson.loads(value) for value in raw]
        for alert in alerts:
            alert["rep_name"] = self.view.rep_name(alert.get("rep_id") or "")
        return alerts

    async def _alert_counts(self, today: str) -> list[dict[str, Any]]:
        """Today's alerts per rule and team: how many fired and how many resolved (of any day's firing)."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for raw, value in (await self.redis.hgetall(f"{ALERT_COUNTS_PREFIX}{today}")).items():
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            rule, status, team = name.split(":", 2)
            row = rows.setdefault((rule, team), {"alert": rule, "team": team, "firing": 0, "resolved": 0})
            if status in ("firing", "resolved"):
                row[status] += int(value)
        return [rows[key] for key in sorted(rows)]

    async def _funnel(self, month: str) -> list[dict[str, Any]]:
        prefix = "salespulse:pipeline:open:pipeline:"
        names = set(self.view.pipelines.specs) | {key[len(prefix):] for key in await self._scan(f"{prefix}*")}
        ordered = sorted(names)
        hashes = await self._hashes(
            [f"{prefix}{name}" for name in ordered] + [f"salespulse:pipeline:pipeline:{name}:month:{month}" for name in ordered]
        )
        cur = self.view.currency
        funnel = []
        for name in ordered:
            open_now = hashes.get(f"{prefix}{name}", {})
            entries = hashes.get(f"salespulse:pipeline:pipeline:{name}:month:{month}", {})
            stages = set(self.view.pipelines.specs[name].stages) if name in self.view.pipelines.specs else set()
            stages |= {f.split(":", 1)[1] for f in (*open_now, *entries) if f.startswith(("deals:", "entries:"))}
            closing = self.view.pipelines.specs.get(name)
            closed = set(closing.won_stages) | set(closing.lost_stages) if closing else set()
            rows = [
                {
                    "stage": stage,
                    "entries": int(entries.get(f"entries:{stage}", 0)),
                    "open_deals": int(open_now.get(f"deals:{stage}", 0)),
                    "open_amount": open_now.get(f"amount:{stage}:{cur}", 0.0),
                }
                for stage in sorted(stages - closed, key=lambda stage: self.view.pipelines.rank(name, stage))
            ]
            funnel.append({"pipeline": name, "stages": rows})
        return funnel

    async def _forecast(self, month: str) -> dict[str, Any]:
        cur = self.view.currency
        open_hashes = await self._hashes(await self._scan("salespulse:pipeline:open:pipeline:*"))
        rep_hashes = await self._hashes(await self._scan(f"salespulse:pipeline:rep:*:month:{month}"))
        won = sum(h.get(f"won_amount:{cur}", 0.0) for h in rep_hashes.values())
        quota = sum(h.get(f"quota:{cur}", 0.0) for h in rep_hashes.values())
        return {
            "open_amount": sum(h.get(f"amount:{cur}", 0.0) for h in open_hashes.values()),
            "weighted": sum(h.get(f"weighted:{cur}", 0.0) for h in open_hashes.values()),
            "open_deals": int(sum(h.get("deals", 0.0) for h in open_hashes.values())),
            "won": won,
            "quota": quota,
            "attainment": won / quota if quota else None,
        }

    async def _activity(self, today: str) -> list[dict[str, Any]]:
        prefix, suffix = "salespulse:activity:rep:", f":day:{today}"
        hashes = await self._hashes(await self._scan(f"{prefix}*{suffix}"))
        rows = []
        for key, fields in hashes.items():
            rep = key[len(prefix):-len(suffix)]
            targets = [
                {"kind": name[len("target:"):], "count": int(fields.get(name[len("target:"):], 0)), "target": int(value)}
                for name, value in sorted(fields.items())
                if name.startswith("target:")
            ]
            rows.append({
                "rep_id": rep,
                "rep_name": self.view.rep_name(rep),
                "team": self.view.team_of_rep.get(rep),
                "total": int(fields.get("total", 0)),
                "targets": targets,
            })
        if self.view.targets is not None:  # a rep with a target and nothing done yet today is on the board too
            shown = {row["rep_id"] for row in rows}
            for rep in sorted(self.view.known_reps - shown):
                targets = [{"kind": kind, "count": 0, "target": target}
                           for kind, target in sorted(self.view.targets(rep, "day").items())]
                if targets:
                    rows.append({"rep_id": rep, "rep_name": self.view.rep_name(rep),
                                 "team": self.view.team_of_rep.get(rep), "total": 0, "targets": targets})
        rows.sort(key=lambda row: (-row["total"], row["rep_name"]))
        return rows
