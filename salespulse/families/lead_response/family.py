"""The lead-response family in the stream: lead states, response aggregates, awaiting leads, SLA alerts.

Two stores, written in this order every batch (so a crash can never keep a lead's new state while
losing the aggregate change it caused): ``response`` (``WindowedFamily`` cells of additive fields per
rep, team and source, in the window of the lead's *creation*) and the lead states (``created``,
``deadline``, ``touch``, assignment history, team, source, ``live``, alert status), in a
``RecordLog`` in the worker: one changelog record per batch however many leads changed.

Alerts: a *live* lead (its creation processed before deadline + grace; backfills are measured but
never alert) that is untouched at its deadline gets ``alert = "firing"`` from the clock
(``due_alerts``), with no other event needed; its first touch after that sets ``"resolved"``. The
pre-breach warning (``warning``) fires the same way at ``warn_at`` (a share of the SLA) and resolves at
the first touch or when the breach fires. An alert is published, then recorded in the lead's
``published`` list, so each status goes out once. The rep, team and source of a lead's first alert are
frozen (``as_fired``): Alertmanager identifies an alert by its labels.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast
from zoneinfo import ZoneInfo


from salespulse.families.lead_response.spec import SPEC
from salespulse.families.lead_response.rules import (
    UNASSIGNED,
    UNKNOWN_SOURCE,
    LeadState,
    contribution,
    contribution_change,
    responsible_rep,
)
from salespulse.families.outbound import is_outbound
from salespulse.models.events import EventBase, LeadAssigned, LeadCreated
from salespulse.families.state import Cell, StateStore
from salespulse.families.windowed import WindowedFamily
from salespulse.families.windows import iso
from salespulse.outputs.alerts import published_key

FAMILY = SPEC.name
REDIS_PREFIX = SPEC.redis_prefix
#: A lead whose creation is processed later than this after its deadline is history: never alerted.
LIVE_GRACE_S = 600.0
SLA_RULE = "lead_response_sla"
WARNING_RULE = "lead_response_warning"
#: Per rule: the state's (status, fired-at, resolved-at) keys.
RULE_KEYS: dict[str, tuple[str, str, str]] = {
    SLA_RULE: ("alert", "fired_at", "resolved_at"),
    WARNING_RULE: ("warning", "warned_at", "warning_resolved_at"),
}

DeadlineOf = Callable[[float, str], float]  # (created epoch, team) -> deadline epoch
BusinessSeconds = Callable[[float, float, str], float]  # (start, end, team) -> open seconds between


class LeadResponseFamily(WindowedFamily):
    """Response times, SLA compliance and coverage per rep, team and source; awaiting leads; SLA alerts."""

    spec = SPEC

    def __init__(  # the windows' store, the leads' store, then the windows' zone and retention
        self, cells: StateStore[Cell], leads: StateStore[Cell], tz: ZoneInfo, retention_s: float,
        sla_s: float,
        deadline_of: DeadlineOf | None = None,
        business_seconds: BusinessSeconds | None = None,
        outbound_kinds: Iterable[str] = (),
        warn_of: DeadlineOf | None = None,
    ) -> None:
        super().__init__(cells, tz, retention_s)
        self.sla_s = sla_s
        self.deadline_of: DeadlineOf = deadline_of or (lambda created, _team: created + sla_s)
        self.business_seconds: BusinessSeconds = business_seconds or (lambda start, end, _team: max(0.0, end - start))
        self.leads = leads
        self._lead = cast(Callable[[int, str], LeadState | None], leads.get)  # typed, as in EngagementFamily
        self._leads = cast(Callable[[int], Iterator[tuple[str, LeadState]]], leads.items)
        self.outbound_kinds = frozenset(kind.strip().lower() for kind in outbound_kinds)
        #: (created epoch, team) -> the pre-breach warning's instant; None: no warnings.
        self.warn_of = warn_of
        #: Per partition: heap of (warn_at, lead id) of live awaiting leads not warned yet.
        self.warnings: dict[int, list[tuple[float, str]]] = {}
        #: Per partition: leads with an alert status of any rule (what is re-sent to Alertmanager).
        self.alerting: dict[int, set[str]] = {}
        #: Per partition: leads created and not touched -> their lead id (all, live or not).
        self.awaiting: dict[int, set[str]] = {}
        #: Per partition: heap of (deadline, lead id) of live awaiting leads without an alert yet.
        self.deadlines: dict[int, list[tuple[float, str]]] = {}
        #: (partition, lead id) of leads with an alert status not yet published.
        self.unpublished: set[tuple[int, str]] = set()
        #: Partitions loaded with unpublished alerts: a previous owner may have sent them unrecorded.
        self.inherited_unpublished: set[int] = set()
        #: Partitions whose awaiting leads may have changed since ``AwaitingPublisher`` last wrote them.
        self.awaiting_changed: set[int] = set()

    @property
    def stores(self) -> tuple[StateStore[Cell], StateStore[Cell]]:
        """Write order: aggregates before the lead states they were derived from."""
        return (self.cells, self.leads)

    # -- loading -----------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        """Rebuild the in-memory indexes of a partition from its lead cells."""
        self.awaiting[partition] = set()
        self.deadlines[partition] = []
        self.warnings[partition] = []
        self.alerting[partition] = set()
        for lead_id, lead in self._leads(partition):
            self._index(partition, lead_id, lead)
        heapq.heapify(self.deadlines[partition])
        self.awaiting_changed.add(partition)
        heapq.heapify(self.warnings[partition])
        if any(p == partition for p, _ in self.unpublished):
            self.inherited_unpublished.add(partition)

    def drop_partition(self, partition: int) -> None:
        super().drop_partition(partition)
        self.awaiting.pop(partition, None)
        self.deadlines.pop(partition, None)
        self.warnings.pop(partition, None)
        self.alerting.pop(partition, None)
        self.unpublished = {entry for entry in self.unpublished if entry[0] != partition}
        self.inherited_unpublished.discard(partition)

    def _index(self, partition: int, lead_id: str, lead: LeadState, push: bool | None = None) -> None:
        """Index a lead: ``push=None`` while loading (heapified after), else push its deadline if ``push``."""
        self.awaiting_changed.add(partition)
        if lead.get("created") is not None and lead.get("touch") is None:
            self.awaiting[partition].add(lead_id)
            if lead.get("live") and lead.get("alert") is None:
                self._push(self.deadlines[partition], (lead["deadline"], lead_id), push)
                warn_at = lead.get("warn_at")
                if warn_at is not None and lead.get("warning") is None:
                    self._push(self.warnings[partition], (warn_at, lead_id), push)
        else:
            self.awaiting[partition].discard(lead_id)
        if lead.get("alert") or lead.get("warning"):
            self.alerting.setdefault(partition, set()).add(lead_id)
            if any(key not in lead.get("published", ()) for _, key, _ in self._statuses(lead_id, lead)):
                self.unpublished.add((partition, lead_id))

    @staticmethod
    def _push(heap: list[tuple[float, str]], entry: tuple[float, str], push: bool | None) -> None:
        if push is None:
            heap.append(entry)  # loading: heapified after
        elif push:
            heapq.heappush(heap, entry)

    # -- events ------------------------------------------------------------------------------------

    def apply(self, partition: int, offset: int, event: EventBase, now: float, arrived: float | None = None) -> bool:
        """Update the lead an event concerns; True if it changed anything.

        ``arrived`` (the Kafka record's timestamp, when ingest wrote it) decides whether a new lead is
        live: a replay after an outage must not mistake a live lead for history. Default: ``now``.
        """
        lead_id = getattr(event, "lead_id", None)
        if lead_id is None:
            return False
        created = isinstance(event, LeadCreated)
        touch = is_outbound(event, self.outbound_kinds)
        if not (created or touch or isinstance(event, LeadAssigned)):
            return False
        at = event.occurred_at.timestamp()
        lead = self._lead(partition, lead_id)
        if lead is not None and touch and (first := lead.get("touch")) is not None and at >= first:
            return False  # a follow-up touch: the first touch stands, nothing changes (the common case)
        if lead is None:
            lead = cast(LeadState, self.leads.cell(partition, lead_id))
        if offset <= lead["wm"]:
            return False  # the state already holds this event (replay after a crash)
        before = contribution(lead)
        before_created = lead.get("created")
        before_deadline = lead.get("deadline")
        if isinstance(event, LeadCreated):
            self._on_created(lead, event, at, now if arrived is None else arrived)
        elif touch:
            self._on_touch(partition, lead_id, lead, event, at, now)
        elif isinstance(event, LeadAssigned):
            self._assign(lead, at, event.rep_id)  # reassignment moves the responsibility, not the clock
            if event.team:
                lead["team"], lead["team_from"] = event.team, "assigned"
        self._refresh_owners(lead)
        self._refresh_response(lead)
        after = contribution(lead)
        if before_created is not None and before_created != lead.get("created"):
            self.add(partition, offset, before_created, now, contribution_change(before, {}))
            self.add(partition, offset, lead["created"], now, contribution_change({}, after))
        elif lead.get("created") is not None:
            deltas = contribution_change(before, after)
            if deltas:
                self.add(partition, offset, lead["created"], now, deltas)
        self.leads.touch(partition, lead_id)
        # A deadline goes on the heap once; later changes of the lead leave it where it is.
        self._index(partition, lead_id, lead, push=lead.get("deadline") != before_deadline)
        return True

    def _on_created(self, lead: LeadState, event: LeadCreated, at: float, arrived: float) -> None:
        first = lead.get("created") is None
        if first or at < lead["created"]:
            lead["created"] = at
        if event.rep_id:
            self._assign(lead, at, event.rep_id)
        if event.team and lead.get("team_from") in (None, "touch"):
            lead["team"], lead["team_from"] = event.team, "created"
        lead["source"] = lead.get("source") or event.source
        if event.mql is not None:
            lead["mql"] = event.mql
        lead["hours_team"] = lead.get("team") or UNASSIGNED  # whose business hours set the clock
        lead["deadline"] = self.deadline_of(lead["created"], lead["hours_team"])
        lead["warn_at"] = None if self.warn_of is None else self.warn_of(lead["created"], lead["hours_team"])
        if first:
            lead["live"] = arrived <= lead["deadline"] + LIVE_GRACE_S

    def _on_touch(self, partition: int, lead_id: str, lead: LeadState, event: EventBase, at: float, now: float) -> None:
        touch = lead.get("touch")
        if touch is not None and at >= touch:
            return
        lead["touch"] = at
        lead["toucher"] = event.rep_id
        if event.team and not lead.get("team"):
            lead["team"], lead["team_from"] = event.team, "touch"
        for rule in (SLA_RULE, WARNING_RULE):
            if self._resolve(lead, rule, now):
                self.unpublished.add((partition, lead_id))

    @staticmethod
    def _resolve(lead: LeadState, rule: str, now: float) -> bool:
        status, _, resolved_at = RULE_KEYS[rule]
        if lead.get(status) != "firing":
            return False
        state = cast(dict[str, Any], lead)
        state[status], state[resolved_at] = "resolved", now
        return True

    @staticmethod
    def _fire(lead: LeadState, rule: str, now: float) -> None:
        status, fired_at, _ = RULE_KEYS[rule]
        state = cast(dict[str, Any], lead)
        state[status], state[fired_at] = "firing", now
        if "as_fired" not in lead:
            lead["as_fired"] = [responsible_rep(lead), lead.get("team") or UNASSIGNED, lead.get("source") or UNKNOWN_SOURCE]

    @staticmethod
    def _assign(lead: LeadState, at: float, rep: str) -> None:
        owners = lead.setdefault("owners", [])
        if [at, rep] not in owners:
            owners.append([at, rep])
            owners.sort()

    @staticmethod
    def _refresh_owners(lead: LeadState) -> None:
        """Current owner, and the owner at the first touch in event time (assignments may arrive late)."""
        owners = lead.get("owners") or []
        lead["owner"] = owners[-1][1] if owners else None
        touch = lead.get("touch")
        if touch is None:
            lead["touch_owner"] = None
            return
        before = [rep for at, rep in owners if at <= touch]
        if before:
            lead["touch_owner"] = before[-1]
        elif owners and lead.get("created") is not None and touch <= lead["created"] and owners[0][0] <= lead["created"]:
            lead["touch_owner"] = owners[0][1]  # a touch stamped before creation is clock skew: the first owner
        else:
            lead["touch_owner"] = UNASSIGNED  # nobody owned the lead when it was touched

    def _refresh_response(self, lead: LeadState) -> None:
        created, touch = lead.get("created"), lead.get("touch")
        if created is not None and touch is not None:
            team = lead.get("hours_team") or lead.get("team") or UNASSIGNED
            lead["response_s"] = max(0.0, self.business_seconds(created, touch, team))

    # -- the clock ---------------------------------------------------------------------------------

    def due_alerts(self, partitions: Iterable[int], now: float) -> int:
        """Fire every live lead of these partitions that reached its deadline untouched; returns how many."""
        fired = 0
        for partition in partitions:
            changed: set[str] = set()
            warnings = self.warnings.get(partition)
            while warnings and warnings[0][0] <= now:
                warn_at, lead_id = heapq.heappop(warnings)
                lead = self._lead(partition, lead_id)
                if (
                    lead is None
                    or lead.get("touch") is not None
                    or lead.get("warning") is not None
                    or lead.get("alert") is not None
                    or not lead.get("live")
                    or lead.get("warn_at") != warn_at
                    or lead["deadline"] <= now  # past the deadline already (a worker was down): the breach says it
                ):
                    continue
                self._fire(lead, WARNING_RULE, now)
                self._after_fire(partition, lead_id, changed)
                fired += 1
            heap = self.deadlines.get(partition)
            while heap and heap[0][0] <= now:
                deadline, lead_id = heapq.heappop(heap)
                lead = self._lead(partition, lead_id)
                if (
                    lead is None
                    or lead.get("touch") is not None
                    or lead.get("alert") is not None
                    or not lead.get("live")
                    or lead.get("deadline") != deadline
                ):
                    continue  # touched, already alerted, or its deadline moved (an earlier creation)
                self._fire(lead, SLA_RULE, now)
                self._resolve(lead, WARNING_RULE, now)  # the breach takes over from its warning
                self._after_fire(partition, lead_id, changed)
                fired += 1
            if changed:
                self.leads.write_many(partition, changed)  # one changelog record per partition and tick
        return fired

    def _after_fire(self, partition: int, lead_id: str, changed: set[str]) -> None:
        changed.add(lead_id)
        self.unpublished.add((partition, lead_id))
        self.alerting.setdefault(partition, set()).add(lead_id)

    def pending_alerts(self, owned: set[int]) -> list[tuple[int, str, dict[str, Any]]]:
        """Alerts to publish now: (partition, lead id, contract alert JSON), oldest status first."""
        out = []
        for partition, lead_id in sorted(self.unpublished):
            if partition not in owned:
                continue
            lead = self._lead(partition, lead_id)
            if lead is None:
                continue
            published = lead.get("published", [])
            for alert, key, _ in self._statuses(lead_id, lead):
                if key not in published:
                    out.append((partition, lead_id, alert))
        return out

    def _statuses(self, lead_id: str, lead: LeadState, now: float | None = None) -> Iterator[tuple[dict[str, Any], str, float]]:
        """Every status the lead's alerts went through, oldest first: (alert JSON, published key, emitted at).

        With ``now``, a firing status is stamped ``now`` (its age grows on each resend to Alertmanager).
        """
        state = cast(dict[str, Any], lead)
        for rule, (status_key, fired_key, resolved_key) in RULE_KEYS.items():
            status = state.get(status_key)
            if status is None:
                continue
            firing = self.alert_json(lead_id, lead, "firing", state[fired_key], rule)
            if status == "firing":
                if now is not None:
                    firing = self.alert_json(lead_id, lead, "firing", now, rule)
                yield firing, published_key(firing), state[fired_key]
                continue
            yield firing, published_key(firing), state[fired_key]
            resolved = self.alert_json(lead_id, lead, "resolved", state[resolved_key], rule)
            yield resolved, published_key(resolved), state[resolved_key]

    def alert_json(
        self, lead_id: str, lead: LeadState, status: str, emitted: float, rule: str = SLA_RULE
    ) -> dict[str, Any]:
        """The contract's alert message for one lead, rule and status (``deadline``: when the rule fires)."""
        rep, team, source = lead.get("as_fired") or (
            responsible_rep(lead), lead.get("team") or UNASSIGNED, lead.get("source") or UNKNOWN_SOURCE
        )
        out: dict[str, Any] = {
            "alert": rule,
            "status": status,
            "lead_id": lead_id,
            "rep_id": rep,
            "team": team,
            "source": source,
            "created_at": iso(lead["created"]),
            "deadline": iso(lead["deadline"]),
            "emitted_at": iso(emitted),
            "age_seconds": round(emitted - lead["created"], 3),
        }
        if rule == WARNING_RULE:
            out["deadline"] = iso(cast(float, lead.get("warn_at")))
            out["sla_deadline"] = iso(lead["deadline"])
        return out

    def active_alerts(self, owned: Iterable[int], now: float, resolved_within_s: float) -> list[dict[str, Any]]:
        """What Alertmanager must hold now, from state: every firing alert (stamped ``now``) and every alert
        resolved within ``resolved_within_s`` (with its resolution time), of the owned partitions."""
        out: list[dict[str, Any]] = []
        for partition in owned:
            leads = self.alerting.get(partition, set())
            for lead_id in list(leads):
                lead = self._lead(partition, lead_id)
                if lead is None:
                    leads.discard(lead_id)
                    continue
                latest: dict[str, tuple[dict[str, Any], float]] = {}
                for alert, _, at in self._statuses(lead_id, lead, now):
                    latest[alert["alert"]] = (alert, at)
                current = [alert for alert, at in latest.values()
                           if alert["status"] == "firing" or at >= now - resolved_within_s]
                if not current:
                    leads.discard(lead_id)  # every alert of the lead resolved long ago
                out.extend(current)
        return out

    def mark_published(self, published: Iterable[tuple[int, str, str]]) -> None:
        """Record durably that these (partition, lead id, published key) alerts went out, so never again."""
        changed: dict[int, set[str]] = {}
        for partition, lead_id, status in published:
            lead = self._lead(partition, lead_id)
            if lead is None:
                continue
            statuses = lead.setdefault("published", [])
            if status not in statuses:
                statuses.append(status)
                changed.setdefault(partition, set()).add(lead_id)
            if all(key in statuses for _, key, _ in self._statuses(lead_id, lead)):
                self.unpublished.discard((partition, lead_id))
        for partition, names in changed.items():
            self.leads.write_many(partition, names)

    # -- live gauges (Prometheus) ------------------------------------------------------------------

    def awaiting_by_team(self, owned: Iterable[int], now: float) -> dict[str, tuple[int, float]]:
        """Per team: live leads awaiting a first touch and the age of the oldest (seconds)."""
        out: dict[str, tuple[int, float]] = {}
        for partition in owned:
            for lead_id in self.awaiting.get(partition, ()):
                lead = self._lead(partition, lead_id)
                if lead is None or not lead.get("live"):
                    continue
                team = lead.get("team") or UNASSIGNED
                count, oldest = out.get(team, (0, 0.0))
                out[team] = (count + 1, max(oldest, now - lead["created"]))
        return out

    def awaiting_leads(self, partition: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """A partition's live leads awaiting a first touch: their count and the ``limit`` oldest."""
        leads = []
        for lead_id in self.awaiting.get(partition, ()):
            lead = self.leads.get(partition, lead_id)
            if lead is not None and lead.get("live"):
                leads.append((lead["created"], lead_id, lead))
        oldest = heapq.nsmallest(limit, leads, key=lambda entry: (entry[0], entry[1]))
        return len(leads), [
            {
                "lead_id": lead_id,
                "rep_id": lead.get("owner") or UNASSIGNED,
                "team": lead.get("team") or UNASSIGNED,
                "source": lead.get("source") or UNKNOWN_SOURCE,
                "created_at": created,
                "deadline": lead["deadline"],
            }
            for created, lead_id, lead in oldest
        ]

    def breaches(
        self, owned: Iterable[int], now: float, malformed: Callable[[str], None] = lambda ident: None
    ) -> dict[tuple[str, str], int]:
        """Per (team, rep): leads whose deadline passed without a touch (touched late, or still waiting); an id
        that does not decode is left out and passed to ``malformed``."""
        totals: dict[tuple[str, str], int] = {}
        for (team, rep), fields in self.all_time_keyed(owned, "team_rep", malformed).items():
            if fields.get("late"):
                totals[(team, rep)] = int(fields["late"])
        for partition in owned:
            for lead_id in self.awaiting.get(partition, ()):
                lead = self._lead(partition, lead_id)
                if lead is not None and lead["deadline"] <= now:
                    key = (lead.get("team") or UNASSIGNED, responsible_rep(lead))
                    totals[key] = totals.get(key, 0) + 1
        return totals

    # -- outputs -----------------------------------------------------------------------------------

    def expire(self, partition: int, now: float) -> int:
        """Expire window cells, and lead states created (or last touched) before retention."""
        expired = super().expire(partition, now)
        cutoff = now - self.retention_s
        stale = []
        for lead_id, lead in self._leads(partition):
            newest = max(
                lead.get("created") or 0.0, lead.get("touch") or 0.0, *(at for at, _ in lead.get("owners") or ())
            )
            if newest < cutoff and (partition, lead_id) not in self.unpublished:
                stale.append(lead_id)
        if stale:
            self.leads.delete_many(partition, stale)  # one changelog record, not one per lead
            awaiting = self.awaiting.get(partition, set())
            awaiting.difference_update(stale)
            self.awaiting_changed.add(partition)
            self.alerting.get(partition, set()).difference_update(stale)
        return expired + len(stale)

