"""Realistic synthetic CRM traffic: a pure seeded generator (``TrafficModel``) and an HTTP sender (``simulate``).

The generator knows nothing about I/O or the wall clock: it is given a ``random.Random``, a start time and
then asked ``due(now)`` for every canonical event whose scheduled time has come. ``simulate`` drives it with
``time.time()`` and posts the events to ``/webhooks/events``.

Only ids (``rep-007``, ``team-emea``, ``sim-42-...-lead-000001``) appear in events; never names or emails.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import orjson
from rich.console import Console
from rich.live import Live
from rich.text import Text

from salespulse.handlers.signatures import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

__all__ = [
    "CALL_OUTCOMES",
    "LEAD_SOURCES",
    "LOSS_REASONS",
    "PIPELINE",
    "STAGES",
    "Rep",
    "SimulationStats",
    "TrafficModel",
    "build_roster",
    "simulate",
]

#: Lead sources and their relative weights (paid search and the website dominate, referrals are rarer).
LEAD_SOURCES: Mapping[str, float] = {
    "google_ads": 30.0,
    "website": 25.0,
    "linkedin": 15.0,
    "referral": 10.0,
    "event": 10.0,
    "cold_outbound": 10.0,
}
# Share of MQLs per source; the weighted mean over LEAD_SOURCES is ~30 %.
_MQL_RATE: Mapping[str, float] = {
    "google_ads": 0.30,
    "website": 0.35,
    "linkedin": 0.25,
    "referral": 0.45,
    "event": 0.35,
    "cold_outbound": 0.10,
}
# Chance that a lead ends up booking a first meeting, before the MQL multiplier.
_MEETING_RATE: Mapping[str, float] = {
    "referral": 0.40,
    "event": 0.30,
    "website": 0.25,
    "google_ads": 0.20,
    "linkedin": 0.18,
    "cold_outbound": 0.08,
}

PIPELINE = "default"
STAGES: tuple[str, ...] = ("qualification", "discovery", "proposal", "negotiation")
_STAGE_PROBABILITY = (0.10, 0.25, 0.50, 0.75)
# Chance a deal is lost while sitting in each stage; what survives negotiation is won (~30 % win rate).
_STAGE_LOSS = (0.30, 0.30, 0.25, 0.20)
LOSS_REASONS: tuple[str, ...] = ("price", "competitor", "no_budget", "timing", "no_decision", "unresponsive")
_LOSS_WEIGHTS = (25, 20, 15, 15, 15, 10)

CALL_OUTCOMES: Mapping[str, float] = {"connected": 0.15, "no_answer": 0.45, "voicemail": 0.28, "busy": 0.12}

_TEAM_NAMES = ("team-emea", "team-amer", "team-apac", "team-latam", "team-dach", "team-nordics", "team-uki", "team-anz")
_CURRENCY = "USD"

# First touch: lognormal, median 120 s and P(> 300 s) = 20 %  =>  sigma = ln(2.5) / z(0.80) ≈ 1.089.
# Part of that spread is the rep (some reps are slower), the rest the lead; the two combine to the total.
_FIRST_TOUCH_MEDIAN_S = 120.0
_FIRST_TOUCH_SIGMA = math.log(2.5) / 0.8416
_REP_SPEED_SIGMA = 0.35
_LEAD_SPEED_SIGMA = math.sqrt(_FIRST_TOUCH_SIGMA**2 - _REP_SPEED_SIGMA**2)
_NEVER_TOUCHED = 0.03
_REASSIGNED = 0.15

# Simulated-time scales of the rest of the lifecycle: short enough that a demo at speedup 60 shows
# meetings, stage changes and closed deals within minutes, long enough to look like a sales process.
_FOLLOW_UP_MEDIAN_S = 1800.0
_MEETING_HELD_MEDIAN_S = 7200.0
_STAGE_MEDIAN_S = 3 * 3600.0


@dataclass(frozen=True, slots=True)
class Rep:
    """A sales rep, known only by ids."""

    rep_id: str
    team: str


def build_roster(reps: int, teams: int) -> list[Rep]:
    """``reps`` reps ``rep-001``… spread round-robin over ``teams`` teams (``team-emea``, ``team-amer``, …)."""
    if reps < 1 or teams < 1:
        raise ValueError("need at least one rep and one team")
    if teams > reps:
        raise ValueError(f"{teams} teams need at least as many reps, got {reps}")
    names = [_TEAM_NAMES[i] if i < len(_TEAM_NAMES) else f"team-{i + 1:02d}" for i in range(teams)]
    return [Rep(f"rep-{i + 1:03d}", names[i % teams]) for i in range(reps)]


@dataclass(slots=True, eq=False)
class _Lead:
    lead_id: str
    rep: Rep
    source: str
    mql: bool
    touch_count: int  # cadence length: touches before the rep gives up (if no meeting)
    meet_after: int | None  # the touch after which a first meeting gets booked, if ever
    touches: int = 0


@dataclass(slots=True, eq=False)
class _Deal:
    deal_id: str
    lead: _Lead
    amount: float
    stage: int = 0
    went_back: bool = False


def _acting(lead: _Lead) -> dict[str, str]:
    """The lead and its current owner, the fields every rep action carries."""
    return {"lead_id": lead.lead_id, "rep_id": lead.rep.rep_id, "team": lead.rep.team}


class TrafficModel:
    """A seeded, I/O-free CRM world: ``due(now)`` returns the canonical event dicts scheduled up to ``now``.

    Times are Unix seconds. Every delay is drawn in simulated seconds and divided by ``speedup``, lead arrivals
    included, so the wall-clock lead rate is ``leads_per_minute * speedup``. The output for a given seed and
    ``start`` does not depend on how often ``due`` is called: items are processed in (time, sequence) order
    and each draws from ``rng`` only when it is processed.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        start: float,
        leads_per_minute: float = 30.0,
        reps: int = 20,
        teams: int = 4,
        speedup: float = 1.0,
        sources: Mapping[str, float] | None = None,
        id_prefix: str = "sim",
        max_leads: int | None = None,
        quotas: bool = True,
    ) -> None:
        if leads_per_minute <= 0:
            raise ValueError("leads_per_minute must be > 0")
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        self.rng = rng
        self.start = start
        self.speedup = speedup
        self.leads_per_minute = leads_per_minute
        self.roster = build_roster(reps, teams)
        src = dict(LEAD_SOURCES if sources is None else sources)
        if not src or any(w < 0 for w in src.values()) or sum(src.values()) <= 0:
            raise ValueError("sources need positive weights")
        self._source_names = list(src)
        self._source_cum = list(itertools.accumulate(src.values()))
        self.id_prefix = id_prefix
        self.max_leads = max_leads
        self.leads_created = 0
        self.deals_created = 0
        self.events_emitted = 0

        self._by_team: dict[str, list[Rep]] = {}
        for rep in self.roster:
            self._by_team.setdefault(rep.team, []).append(rep)
        # Centred per-rep speed offsets, so the population median first touch stays ~120 s for any seed.
        offsets = [rng.gauss(0.0, _REP_SPEED_SIGMA) for _ in self.roster]
        mean = sum(offsets) / len(offsets)
        self._rep_speed = {rep.rep_id: off - mean for rep, off in zip(self.roster, offsets)}

        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._out: list[dict[str, Any]] = []
        self._counters: dict[str, itertools.count[int]] = {}

        if quotas:
            self._push(start, self._set_quotas)
        self._push(start, self._arrive)  # first lead at once: a newcomer sees something immediately

    # -- public ---------------------------------------------------------------------------------------

    def due(self, now: float) -> list[dict[str, Any]]:
        """Every event scheduled at or before ``now``, in ``occurred_at`` order, each a contract-valid dict."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, step, args = heapq.heappop(heap)
            step(at, *args)
        out, self._out = self._out, []
        return out

    @property
    def next_due(self) -> float | None:
        """The time of the next scheduled item, or ``None`` when the world has run out (only with ``max_leads``)."""
        return self._heap[0][0] if self._heap else None

    # -- scheduling helpers ---------------------------------------------------------------------------

    def _push(self, at: float, step: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), step, args))

    def _after(self, at: float, sim_delay_s: float) -> float:
        return at + sim_delay_s / self.speedup

    def _lognormal(self, median: float, sigma: float) -> float:
        return self.rng.lognormvariate(math.log(median), sigma)

    def _new_id(self, kind: str) -> str:
        counter = self._counters.setdefault(kind, itertools.count(1))
        return f"{self.id_prefix}-{kind}-{next(counter):06d}"

    def _emit(self, at: float, type_: str, **fields: Any) -> None:
        event: dict[str, Any] = {
            "event_id": f"{self.id_prefix}-{next(self._ids)}",
            "type": type_,
            "occurred_at": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
        }
        event.update((k, v) for k, v in fields.items() if v is not None)
        self._out.append(event)
        self.events_emitted += 1

    def _emit_later(self, at: float, type_: str, fields: dict[str, Any]) -> None:
        self._emit(at, type_, **fields)

    def _pick_source(self) -> str:
        return self.rng.choices(self._source_names, cum_weights=self._source_cum)[0]

    # -- lifecycle steps (each runs at its scheduled time ``at``) -------------------------------------------

    def _set_quotas(self, at: float) -> None:
        period = datetime.fromtimestamp(at, UTC).strftime("%Y-%m")
        for rep in self.roster:
            amount = self.rng.choice((60_000, 80_000, 100_000, 120_000, 150_000))
            self._emit(
                at, "quota.set", rep_id=rep.rep_id, team=rep.team, period=period, amount=amount, currency=_CURRENCY
            )

    def _arrive(self, at: float) -> None:
        if self.max_leads is not None and self.leads_created >= self.max_leads:
            return
        self.leads_created += 1
        rng = self.rng
        source = self._pick_source()
        rep = rng.choice(self.roster)
        mql = rng.random() < _MQL_RATE.get(source, 0.30)
        meet_p = min(0.8, _MEETING_RATE.get(source, 0.20) * (1.6 if mql else 0.75))
        touch_count = 1 + min(7, int(rng.expovariate(1 / 2.5)))
        meet_after = rng.randint(1, touch_count) if rng.random() < meet_p else None
        lead = _Lead(self._new_id("lead"), rep, source, mql, touch_count, meet_after)
        self._emit(at, "lead.created", lead_id=lead.lead_id, rep_id=rep.rep_id, team=rep.team, source=source, mql=mql)

        touched = rng.random() >= _NEVER_TOUCHED
        first_s = 0.0
        if touched:
            log_median = math.log(_FIRST_TOUCH_MEDIAN_S) + self._rep_speed[rep.rep_id]
            first_s = max(1.0, rng.lognormvariate(log_median, _LEAD_SPEED_SIGMA))
        if rng.random() < _REASSIGNED:
            # Reassignment happens before the first touch: it moves the responsibility, not the SLA clock.
            assign_s = first_s * rng.uniform(0.1, 0.7) if touched else rng.uniform(10, 600)
            self._push(self._after(at, assign_s), self._assign, lead)
        if touched:
            self._push(self._after(at, first_s), self._touch, lead)
        self._push(self._after(at, rng.expovariate(self.leads_per_minute / 60.0)), self._arrive)

    def _assign(self, at: float, lead: _Lead) -> None:
        teammates = [r for r in self._by_team[lead.rep.team] if r != lead.rep]
        candidates = teammates or [r for r in self.roster if r != lead.rep]
        if not candidates:  # a one-rep roster has nobody to hand over to
            return
        lead.rep = self.rng.choice(candidates)
        self._emit(at, "lead.assigned", lead_id=lead.lead_id, rep_id=lead.rep.rep_id, team=lead.rep.team)

    def _touch(self, at: float, lead: _Lead) -> None:
        rng = self.rng
        lead.touches += 1
        if lead.touches == 1:
            # The first touch is always a contract "outbound touch" (call or email), whatever the config says.
            kind = "call" if rng.random() < 0.55 else "email"
        else:
            kind = rng.choices(("call", "email", "linkedin_message", "visit"), (40, 40, 15, 5))[0]
        if kind == "call":
            self._call(at, lead)
        elif kind == "email":
            self._email(at, lead)
        else:
            self._emit(at, "activity.logged", **_acting(lead), kind=kind, outbound=True)
        if lead.meet_after == lead.touches:
            self._push(self._after(at, rng.uniform(60, 900)), self._book_meeting, lead, "first")
        elif lead.touches < lead.touch_count:
            self._push(self._after(at, self._lognormal(_FOLLOW_UP_MEDIAN_S, 1.0)), self._touch, lead)

    def _call(self, at: float, lead: _Lead) -> None:
        rng = self.rng
        outcome = rng.choices(list(CALL_OUTCOMES), list(CALL_OUTCOMES.values()))[0]
        duration = {
            "connected": lambda: rng.uniform(60, 1200),
            "voicemail": lambda: rng.uniform(15, 60),
            "no_answer": lambda: rng.uniform(20, 45),
            "busy": lambda: rng.uniform(0, 5),
        }[outcome]()
        self._emit(
            at,
            "call.logged",
            lead_id=lead.lead_id,
            rep_id=lead.rep.rep_id,
            team=lead.rep.team,
            outcome=outcome,
            duration_s=round(duration, 1),
        )

    def _email(self, at: float, lead: _Lead) -> None:
        rng = self.rng
        email_id = self._new_id("email")
        personalized = rng.random() < 0.40
        self._emit(at, "email.sent", **_acting(lead), email_id=email_id, personalized=personalized)
        fields = {**_acting(lead), "email_id": email_id}
        # Open and click tracking knows the email, not the rep: the engine credits the sender.
        tracked = {"lead_id": lead.lead_id, "email_id": email_id}
        if rng.random() < 0.04:
            self._push(self._after(at, rng.uniform(5, 120)), self._emit_later, "email.bounced", fields)
            return
        if rng.random() >= (0.55 if personalized else 0.40):
            return
        opened = self._after(at, self._lognormal(1200, 1.2))
        self._push(opened, self._emit_later, "email.opened", tracked)
        again = opened
        for _ in range(3):  # people reopen; the engine must count each email once
            if rng.random() >= 0.35:
                break
            again = self._after(again, self._lognormal(3600, 1.0))
            self._push(again, self._emit_later, "email.opened", tracked)
        if rng.random() < 0.25:
            self._push(self._after(opened, rng.uniform(5, 300)), self._emit_later, "email.clicked", tracked)
        if rng.random() < 0.15:
            self._push(self._after(opened, self._lognormal(1800, 1.0)), self._emit_later, "email.replied", fields)

    def _book_meeting(self, at: float, lead: _Lead, kind: str) -> None:
        rng = self.rng
        meeting_id = self._new_id("meeting")
        self._emit(at, "meeting.booked", **_acting(lead), meeting_id=meeting_id, kind=kind)
        held_p = {"first": 0.80, "demo": 0.85, "follow_up": 0.90}[kind]
        if rng.random() < held_p:
            held_at = self._after(at, self._lognormal(_MEETING_HELD_MEDIAN_S, 0.8))
            self._push(held_at, self._hold_meeting, lead, meeting_id, kind)
        elif kind == "first":
            # A no-show earns one more chasing touch instead of a dead end.
            lead.touch_count = lead.touches + 1
            lead.meet_after = None
            self._push(self._after(at, self._lognormal(_FOLLOW_UP_MEDIAN_S, 1.0)), self._touch, lead)

    def _hold_meeting(self, at: float, lead: _Lead, meeting_id: str, kind: str) -> None:
        self._emit(at, "meeting.held", **_acting(lead), meeting_id=meeting_id, kind=kind)
        convert_p = 0.65 if lead.mql else 0.50
        if kind == "first" and not lead.mql:
            # A held first meeting qualifies the lead (MQL after creation: MQL -> customer counts it).
            lead.mql = True
            self._emit(at, "lead.qualified", lead_id=lead.lead_id, rep_id=lead.rep.rep_id, team=lead.rep.team)
        if kind == "first" and self.rng.random() < convert_p:
            self._push(self._after(at, self._lognormal(1800, 0.8)), self._convert, lead)

    def _convert(self, at: float, lead: _Lead) -> None:
        amount = float(round(min(80_000.0, max(2_000.0, self._lognormal(15_000, 0.9))), -2))
        deal = _Deal(self._new_id("deal"), lead, amount)
        self.deals_created += 1
        rep = lead.rep
        self._emit(at, "lead.converted", lead_id=lead.lead_id, deal_id=deal.deal_id, rep_id=rep.rep_id, team=rep.team)
        self._emit(
            at,
            "deal.created",
            deal_id=deal.deal_id,
            lead_id=lead.lead_id,
            rep_id=rep.rep_id,
            team=rep.team,
            source=lead.source,
            pipeline=PIPELINE,
            stage=STAGES[0],
            amount=amount,
            currency=_CURRENCY,
            probability=_STAGE_PROBABILITY[0],
            # Every tenth deal sells more to a customer (upsell share); no extra draw keeps the stream.
            kind="upsell" if self.deals_created % 10 == 9 else "new",
        )
        self._push(self._after(at, self._lognormal(_STAGE_MEDIAN_S, 0.7)), self._advance, deal)

    def _advance(self, at: float, deal: _Deal) -> None:
        rng = self.rng
        rep = deal.lead.rep
        common = {
            "deal_id": deal.deal_id,
            "rep_id": rep.rep_id,
            "team": rep.team,
            "source": deal.lead.source,
            "pipeline": PIPELINE,
        }
        i = deal.stage
        if rng.random() < _STAGE_LOSS[i]:
            self._emit(at, "deal.lost", **common, reason=rng.choices(LOSS_REASONS, _LOSS_WEIGHTS)[0])
            return
        if i == len(STAGES) - 1:
            won = float(round(deal.amount * rng.uniform(0.9, 1.0)))  # the usual closing discount
            self._emit(at, "deal.won", **common, amount=won, currency=_CURRENCY)
            return
        if i >= 2 and not deal.went_back and rng.random() < 0.08:
            to = i - 1  # an occasional step back exercises the "backward" transition direction
            deal.went_back = True
        else:
            to = i + 1
        if to == 2 and not deal.went_back:
            deal.amount = float(round(min(80_000.0, max(2_000.0, deal.amount * rng.uniform(0.85, 1.15))), -2))
        self._emit(
            at,
            "deal.stage_changed",
            **common,
            from_stage=STAGES[i],
            to_stage=STAGES[to],
            amount=deal.amount,
            currency=_CURRENCY,
            probability=_STAGE_PROBABILITY[to],
        )
        deal.stage = to
        if to > i and STAGES[to] in ("discovery", "negotiation"):
            kind = "demo" if STAGES[to] == "discovery" else "follow_up"
            self._push(self._after(at, rng.uniform(300, 3600)), self._book_meeting, deal.lead, kind)
        self._push(self._after(at, self._lognormal(_STAGE_MEDIAN_S, 0.7)), self._advance, deal)


# ---------------------------------------------------------------------------------------------------------
# The sender


@dataclass(slots=True)
class SimulationStats:
    """What one ``simulate`` run did; event counts unless named otherwise."""

    seed: int
    generated: int = 0  # events the model produced
    posted: int = 0  # events in requests that got a final answer (2xx or 4xx)
    accepted: int = 0  # per the server's 202 answers
    rejected: int = 0  # events in requests answered 4xx (should stay 0)
    unsent: int = 0  # events still undelivered when stopped (server down until the end)
    retries: int = 0  # re-sent requests (503, 5xx, connection errors, timeouts)
    requests: int = 0  # HTTP attempts, retries included
    leads: int = 0
    elapsed_s: float = 0.0
    started_at: float = field(default_factory=time.time)
    last_ok_at: float = field(default_factory=time.time)  # the last 2xx answer (or the start)
    last_error: str = ""  # the last failed attempt: status and body, or the connection error
    #: Why the run stopped before its end (a 401/403/404, or no delivery for ``give_up_after_s``); None if it did not.
    failure: str | None = None


_TICK_S = 0.2
_MAX_BATCH = 500  # the contract's cap per request
_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0
_DRAIN_S = 10.0  # after the duration ends, how long an undelivered batch may still be retried
#: Answers that no retry will change, with what to check.
_FATAL_STATUS = {
    401: " (check SALESPULSE_WEBHOOK_SECRET: it must be the server's)",
    403: " (check SALESPULSE_WEBHOOK_SECRET: it must be the server's)",
    404: " (no webhook endpoint there: check --url)",
    405: " (no webhook endpoint there: check --url)",
}


class _Progress:
    """A one-line live status; rich re-renders it on its own refresh timer, so retries stay visible."""

    def __init__(self, stats: SimulationStats, backlog: Callable[[], int]) -> None:
        self.stats = stats
        self.backlog = backlog

    def __rich__(self) -> Text:
        s = self.stats
        elapsed = max(time.time() - s.started_at, 1e-9)
        line = Text.assemble(
            ("simulate ", "bold"),
            f"{s.posted} events sent ({s.posted / elapsed:.0f}/s), {s.leads} leads, ",
            (f"{s.retries} retries", "yellow" if s.retries else ""),
            ", ",
            (f"{s.rejected} rejected", "red" if s.rejected else ""),
            f", backlog {self.backlog()}, {elapsed:.0f}s",
        )
        return line


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def _accepted_count(body: str, sent: int) -> int:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return sent
    if isinstance(answer, dict) and isinstance(answer.get("accepted"), int):
        return answer["accepted"]
    return sent


_Outcome = Literal["ok", "rejected", "fatal", "gave_up"]


async def _deliver(
    session: aiohttp.ClientSession,
    endpoint: str,
    events: Sequence[dict[str, Any]],
    *,
    secret: str | None,
    stats: SimulationStats,
    stop: asyncio.Event,
    give_up_at: float | None,
    console: Console | None,
) -> _Outcome:
    """Post one batch until it gets a final answer: "ok", "rejected", "fatal" (401/403) or "gave_up" (stopped)."""
    body = orjson.dumps(list(events))  # signed and re-sent byte for byte
    delay = _BACKOFF_START_S
    while True:
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)  # fresh timestamp per attempt, same body
        status: int | None
        try:
            async with session.post(endpoint, data=body, headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, text = None, f"{type(exc).__name__}: {exc}"
        stats.requests += 1
        if status is not None and 200 <= status < 300:
            stats.last_ok_at = time.time()
            stats.posted += len(events)
            stats.accepted += _accepted_count(text, len(events))
            return "ok"
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            # A 4xx will not change on retry; the server's body names the bad fields.
            stats.posted += len(events)
            stats.rejected += len(events)
            fatal = status in _FATAL_STATUS
            hint = _FATAL_STATUS.get(status, "")
            msg = f"{endpoint} answered {status}{hint} to {len(events)} events: {' '.join(text[:2000].split())}"
            log.warning(msg)
            if console is not None:
                console.print(Text(msg, style="red"))
            if fatal:
                stats.failure = msg
            return "fatal" if fatal else "rejected"
        stats.last_error = f"answered {status}: {' '.join(text[:500].split())}" if status is not None else text
        # 503 (event log unavailable), other 5xx, throttling, connection errors: same body again, the
        # server dedups by event_id, so a retry after an unseen success cannot double-count.
        if stop.is_set() or (give_up_at is not None and time.time() >= give_up_at):
            stats.unsent += len(events)
            return "gave_up"
        stats.retries += 1
        log.debug("retrying %d events after %s", len(events), status or text)
        await _sleep_or_stop(stop, delay * random.uniform(0.75, 1.25))
        delay = min(delay * 2, _BACKOFF_MAX_S)


async def simulate(
    url: str,
    *,
    secret: str | None = None,
    duration_s: float | None = None,
    leads_per_minute: float = 30.0,
    reps: int = 20,
    teams: int = 4,
    seed: int | None = None,
    speedup: float = 1.0,
    batch_size: int = 100,
    console: Console | None = None,
    stop: asyncio.Event | None = None,
    give_up_after_s: float | None = None,
) -> SimulationStats:
    """Post synthetic traffic to ``{url}/webhooks/events`` until ``duration_s`` or ``stop``; 503s are retried.

    With ``give_up_after_s``, a run in which nothing was delivered for that long (server down, 5xx) stops
    and says why in ``stats.failure``, as does a 401, 403 or 404 (a wrong secret or URL) at once.

    Events carry wall-clock ``occurred_at`` (the moment each falls due). With ``seed=None`` a seed is drawn
    and reported in the returned stats; ids also carry a per-run tag so a rerun with the same seed is not
    swallowed by the server's event_id dedup.
    """
    if not 1 <= batch_size <= _MAX_BATCH:
        raise ValueError(f"batch_size must be within 1..{_MAX_BATCH}")
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    stop = stop if stop is not None else asyncio.Event()
    start = time.time()
    model = TrafficModel(
        random.Random(seed),
        start=start,
        leads_per_minute=leads_per_minute,
        reps=reps,
        teams=teams,
        speedup=speedup,
        # A per-run tag (start time in ms) keeps a rerun with the same seed from being deduplicated away.
        id_prefix=f"sim-{seed}-{int(start * 1000) % 16**8:08x}",
    )
    stats = SimulationStats(seed=seed, started_at=start)
    endpoint = url.rstrip("/") + "/webhooks/events"
    deadline = None if duration_s is None else start + duration_s
    give_up_at = None if deadline is None else deadline + _DRAIN_S
    outbox: deque[dict[str, Any]] = deque()

    live = Live(_Progress(stats, lambda: len(outbox)), console=console, refresh_per_second=4) if console else None
    if live is not None:
        live.start()
    try:
        # Posting is sequential: one request in flight keeps order and makes backpressure trivial.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=5)) as session:
            while not stop.is_set():
                tick = time.time()
                if deadline is not None and tick >= deadline:
                    break
                fresh = model.due(tick)
                stats.generated += len(fresh)
                stats.leads = model.leads_created
                outbox.extend(fresh)
                outcome: _Outcome = "ok"
                while outbox and outcome in ("ok", "rejected"):
                    batch = [outbox.popleft() for _ in range(min(batch_size, len(outbox)))]
                    stalled_at = None if give_up_after_s is None else stats.last_ok_at + give_up_after_s
                    limits = [t for t in (give_up_at, stalled_at) if t is not None]
                    outcome = await _deliver(
                        session,
                        endpoint,
                        batch,
                        secret=secret,
                        stats=stats,
                        stop=stop,
                        give_up_at=min(limits) if limits else None,
                        console=console,
                    )
                    if outcome == "gave_up" and stalled_at is not None and time.time() >= stalled_at:
                        stats.failure = (
                            f"nothing delivered to {endpoint} for {give_up_after_s:g} s "
                            f"({stats.requests} attempts); last: {stats.last_error}"
                        )
                if outcome in ("fatal", "gave_up"):  # a bad secret will not heal; a stop means stop now
                    break
                wait = _TICK_S - (time.time() - tick)
                if deadline is not None:
                    wait = min(wait, deadline - time.time())
                await _sleep_or_stop(stop, wait)
    finally:
        stats.unsent += len(outbox)
        stats.elapsed_s = time.time() - start
        if live is not None:
            live.stop()
            if not live.console.is_terminal:
                live.console.line()  # the last frame ends without one when the output is a file or pipe
    if console is not None:
        console.print(
            f"simulate done: {stats.posted} events posted in {stats.elapsed_s:.1f}s ({stats.accepted} accepted, "
            f"{stats.rejected} rejected, {stats.retries} retries, {stats.unsent} unsent), "
            f"{stats.leads} leads, seed {seed}"
        )
    return stats
