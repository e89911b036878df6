"""The pipeline family's entity states, typed: deals, leads and quotas, and their JSON form in the changelog.

Every fact carries the ``(at, event_id)`` of the event that set it, so that the latest (or earliest) one
wins whatever the arrival order (``families.pipeline.fold`` folds events in). In memory the facts are
tuples and the entities slotted records, their repeated strings (pipeline, stage, rep, team, source,
currency) interned; in the changelog (``RecordLog`` records under ``d:<deal>``, ``l:<lead>`` and
``q:<rep>:<YYYY-MM>``) they are the JSON objects they always were, so older records load unchanged::

    deal:  {"wm", "last": newest fact's time,
            "entries": [[at, eid, pipeline, stage, from_stage|null, probability|null]],   (created + stage changes)
            "closes":  [[at, eid, pipeline, outcome, reason|null, amount|null, currency|null]],
            "created": [at, eid, pipeline, kind|null],                                   (the earliest deal.created)
            "amount" / "currency" / "owner" / "team" / "source": [at, eid, value],       (the latest carrying it)
            "probs": [[at, eid, probability]], "expected_close": [at, eid, epoch],       (deal.updated)
            "lead": [at, eid | "created", lead id], "churned": [at, eid, rep|null]}
    lead:  {"wm", "last", "created": [at, eid], "owner" / "team" / "source": [at, eid, value], "mql": true,
            "converted": true, "deals": {deal id: [at, eid, outcome] | null}, "churned": [at, eid, rep|null]}
    quota: {"wm", "value": [at, eid, amount, currency|null, team|null]}

Lists are sorted by ``(at, eid)``; a key is written only when set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter
from sys import intern
from typing import Any, Final, NamedTuple

from salespulse.families.state import Cell, StateIndex, TypedCodec, interned



class Entry(NamedTuple):
    """A stage entry: ``deal.created`` or ``deal.stage_changed``."""

    at: float
    event_id: str
    pipeline: str
    stage: str
    from_stage: str | None
    probability: float | None


class Close(NamedTuple):
    """A ``deal.won`` or ``deal.lost``."""

    at: float
    event_id: str
    pipeline: str
    outcome: str
    reason: str | None
    amount: float | None
    currency: str | None


class Creation(NamedTuple):
    """The earliest ``deal.created``: its pipeline and kind."""

    at: float
    event_id: str
    pipeline: str
    kind: str | None


class Text(NamedTuple):
    """A text fact (owner, team, source, currency, a deal's lead) as of an event."""

    at: float
    event_id: str
    value: str


class Number(NamedTuple):
    """A number fact (amount, probability, expected close) as of an event."""

    at: float
    event_id: str
    value: float


class Churn(NamedTuple):
    """The earliest ``customer.churned``, and the rep it names (if any)."""

    at: float
    event_id: str
    rep: str | None


class Stamp(NamedTuple):
    """When an event happened, and which (a lead's creation)."""

    at: float
    event_id: str


class Outcome(NamedTuple):
    """The close of a lead's deal (``lead.deal_closed``)."""

    at: float
    event_id: str
    outcome: str


QuotaValue = tuple[float, str, float, str | None, str | None]  # (at, eid, amount, currency, team)
#: The ``deals`` of every lead without any: read-only (``PipelineLead.deal`` gives a lead its own dict).
_NO_DEALS: Final[dict[str, Outcome | None]] = {}


@dataclass(slots=True)
class Deal:
    """One deal: its timeline (entries and closes), creation, and the latest of each fact."""

    wm: int = -1
    last: float | None = None
    entries: tuple[Entry, ...] = ()
    closes: tuple[Close, ...] = ()
    created: Creation | None = None
    amount: Number | None = None
    currency: Text | None = None
    owner: Text | None = None
    team: Text | None = None
    source: Text | None = None
    probs: tuple[Number, ...] = ()
    expected_close: Number | None = None
    lead: Text | None = None
    churned: Churn | None = None


@dataclass(slots=True)
class PipelineLead:
    """One lead as the pipeline family's cohorts need it: creation, owner, MQL, conversion, its deals' closes."""

    wm: int = -1
    last: float | None = None
    created: Stamp | None = None
    owner: Text | None = None
    team: Text | None = None
    source: Text | None = None
    mql: bool = False
    converted: bool = False
    deals: dict[str, Outcome | None] = field(default_factory=lambda: _NO_DEALS)
    churned: Churn | None = None

    def set_deal(self, deal_id: str, outcome: Outcome | None) -> None:
        if self.deals is _NO_DEALS:
            self.deals = {}
        self.deals[deal_id] = outcome


@dataclass(slots=True)
class Quota:
    """A rep's quota for a month: the latest ``quota.set``."""

    wm: int = -1
    value: QuotaValue | None = None


Entity = Deal | PipelineLead | Quota


def _text(raw: list[Any] | None) -> Text | None:
    return None if raw is None else Text(raw[0], raw[1], intern(raw[2]))


def _churn(raw: list[Any] | None) -> Churn | None:
    return None if raw is None else Churn(raw[0], raw[1], interned(raw[2]))


def _number(raw: list[Any] | None) -> Number | None:
    return None if raw is None else Number(raw[0], raw[1], raw[2])


class PipelineCodec(TypedCodec[Entity]):
    """``StateCodec`` of the pipeline family's entities, by key: ``d:`` deals, ``l:`` leads, ``q:`` quotas."""

    def new(self, name: str) -> Entity:  # the kind named by the key, not the one given at construction
        return Deal() if name.startswith("d:") else PipelineLead() if name.startswith("l:") else Quota()

    def index(self, name: str, state: Entity) -> StateIndex:
        """Newest fact for expiry; every deal and quota is watched (the open-pipeline gauges and the quota
        keys are rebuilt from them at load), a lead is not."""
        return newest_fact(name, state), None if isinstance(state, PipelineLead) else 0.0

    def decode(self, name: str, raw: Cell) -> Entity:
        if name.startswith("d:"):
            return self._decode_deal(raw)
        if name.startswith("l:"):
            return self._decode_lead(raw)
        value = raw.get("value")
        return Quota(raw["wm"], None if value is None else (value[0], value[1], value[2], value[3], value[4]))

    @staticmethod
    def _decode_deal(raw: Cell) -> Deal:
        get = raw.get
        created = get("created")
        return Deal(
            wm=raw["wm"],
            last=get("last"),
            entries=tuple(
                Entry(at, eid, intern(pipeline), intern(stage), interned(from_stage), probability)
                for at, eid, pipeline, stage, from_stage, probability in get("entries", ())
            ),
            closes=tuple(
                Close(at, eid, intern(pipeline), intern(outcome), reason, amount, interned(currency))
                for at, eid, pipeline, outcome, reason, amount, currency in get("closes", ())
            ),
            created=None if created is None else Creation(created[0], created[1], intern(created[2]), interned(created[3])),
            amount=_number(get("amount")),
            currency=_text(get("currency")),
            owner=_text(get("owner")),
            team=_text(get("team")),
            source=_text(get("source")),
            probs=tuple(Number(at, eid, p) for at, eid, p in get("probs", ())),
            expected_close=_number(get("expected_close")),
            lead=None if get("lead") is None else Text(raw["lead"][0], raw["lead"][1], raw["lead"][2]),
            churned=_churn(get("churned")),
        )

    @staticmethod
    def _decode_lead(raw: Cell) -> PipelineLead:
        get = raw.get
        created = get("created")
        lead = PipelineLead(
            wm=raw["wm"], last=get("last"), created=None if created is None else Stamp(created[0], created[1]),
            owner=_text(get("owner")), team=_text(get("team")), source=_text(get("source")),
            mql=bool(get("mql")), converted=bool(get("converted")), churned=_churn(get("churned")),
        )
        for deal_id, close in (get("deals") or {}).items():
            lead.set_deal(deal_id, None if close is None else Outcome(close[0], close[1], intern(close[2])))
        return lead

    def encode(self, state: Entity) -> Cell:
        out: dict[str, Any] = {"wm": state.wm}
        if isinstance(state, Quota):
            if state.value is not None:
                out["value"] = [*state.value]
            return out
        if state.last is not None:
            out["last"] = state.last
        if isinstance(state, Deal):
            for name, items in zip(_DEAL_LISTS, _deal_lists(state)):
                if items:
                    out[name] = [[*item] for item in items]
            for name, fact in zip(_DEAL_FACTS, _deal_facts(state)):
                if fact is not None:
                    out[name] = [*fact]
            return out
        for name, fact in zip(_LEAD_FACTS, _lead_facts(state)):
            if fact is not None:
                out[name] = [*fact]
        if state.mql:
            out["mql"] = True
        if state.converted:
            out["converted"] = True
        if state.deals:
            out["deals"] = {deal_id: None if close is None else [*close] for deal_id, close in state.deals.items()}
        return out


# Read in one call each at every persist of a changed state.
_DEAL_LISTS = ("entries", "closes", "probs")
_DEAL_FACTS = ("created", "amount", "currency", "owner", "team", "source", "expected_close", "lead", "churned")
_LEAD_FACTS = ("created", "owner", "team", "source", "churned")
_deal_lists, _deal_facts, _lead_facts = attrgetter(*_DEAL_LISTS), attrgetter(*_DEAL_FACTS), attrgetter(*_LEAD_FACTS)
def newest_fact(key: str, state: Entity) -> float:
    """The time of a state's newest fact (for expiry); a quota's is the end of its month."""
    if isinstance(state, Quota):
        period = key.rsplit(":", 1)[1]
        year, month = (int(part) for part in period.split("-"))
        return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
    return state.last or 0.0


PIPELINE_CODEC = PipelineCodec(Deal)
