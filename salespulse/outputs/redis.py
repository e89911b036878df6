"""Redis output: per-partition partial hashes merged into totals by one atomic Lua script, plus pub/sub.

Key schema (docs/outputs.md): ``salespulse:<family>:<scope>:<id>:<window>`` is a hash of totals;
``...#partials`` a hash of every partition's partial (``<watermark> <fields as JSON>`` per partition).
Every flush is one pipelined round trip; each script call publishes one message on
``salespulse:updates`` listing the keys it changed and their new totals.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import orjson

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from salespulse.outputs.aggregates import Partial

UPDATES_CHANNEL = "salespulse:updates"
_KEYS_PER_CALL = 250
#: Each publisher's own key, proof that Redis still holds what it wrote (``lost_everything``).
SENTINEL_PREFIX = "salespulse:sentinel:"
_SENTINEL_TTL_S = 3600


class RedisPublisher:
    """Writes absolute partials to Redis idempotently; safe to repeat, safe against stale writers."""

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str = UPDATES_CHANNEL,
        derived: Mapping[str, Any] | None = None,
        beside: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``derived``: per family, the spec of fields computed from merged totals (see the Lua script);
        ``beside``: per family, the rates whose team value is written beside each rep's (``team_<rate>``)."""
        self.client = client
        self.channel = channel
        self.derived = dict(derived or {})
        self.beside = {family: list(rates) for family, rates in (beside or {}).items()}
        self._script = client.register_script(files("salespulse.outputs").joinpath("merge_partials.lua").read_text())
        self.sentinel = f"{SENTINEL_PREFIX}{uuid.uuid4().hex}"

    async def lost_everything(self) -> bool:
        """True if Redis lost what this publisher wrote (restarted without persistence, flushed) since the last
        call, or this is the first call: its sentinel key is gone. The sentinel is (re)written before this
        returns, so one loss is reported once. One round trip; raises what the client raises."""
        if await self.client.expire(self.sentinel, _SENTINEL_TTL_S):
            return False
        await self.client.set(self.sentinel, b"1", ex=_SENTINEL_TTL_S)
        return True

    async def publish(self, partials: Sequence[Partial]) -> int:
        """Merge the partials in one pipelined round trip; returns how many keys changed."""
        if not partials:
            return 0
        # One script entry per key with all its partitions' partials: its total is rewritten once.
        by_family: dict[str, dict[str, list[Partial]]] = defaultdict(lambda: defaultdict(list))
        for partial in partials:
            by_family[partial.family][partial.redis_key].append(partial)
        payloads: list[bytes] = []
        for family, keys in by_family.items():
            # Each group total (a team) just before the keys that copy from it (its reps).
            items = sorted(keys.items(), key=_group_first)
            for start in range(0, len(items), _KEYS_PER_CALL):
                payload = {
                    "channel": self.channel,
                    "family": family,
                    "derived": self.derived.get(family),
                    "beside": self.beside.get(family),
                    "keys": [
                        [
                            key,
                            max(p.ttl_s for p in group),
                            [[p.partition, p.watermark, f"{p.watermark} {orjson.dumps(p.fields).decode()}"] for p in group],
                            next((p.group_key for p in reversed(group) if p.group_key), None),
                        ]
                        for key, group in items[start : start + _KEYS_PER_CALL]
                    ],
                }
                payloads.append(orjson.dumps(payload))
        try:
            results = await self._evalsha(payloads)
        except NoScriptError:  # a restarted Redis forgot the script: load it and send again (idempotent)
            await self.client.script_load(self._script.script)
            results = await self._evalsha(payloads)
        return sum(int(r) for r in results)

    async def _evalsha(self, payloads: Sequence[bytes]) -> list[Any]:
        # EVALSHA directly, not through a Script object: a pipeline of those first asks Redis whether the
        # script exists, a round trip per flush before any command is sent.
        async with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.evalsha(self._script.sha, 0, payload)
            return await pipe.execute()


def _group_first(item: tuple[str, list[Partial]]) -> tuple[str, bool]:
    key, partials = item
    group = next((p.group_key for p in reversed(partials) if p.group_key), None)
    return (group or key, group is not None)
