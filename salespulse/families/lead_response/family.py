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
from sys import intern
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast
from zoneinfo import ZoneInfo


from salespulse.families.lead_response.spec import SPEC
from salespulse.families.lead_response.state import SLA_RULE, WARNING_RULE, Episode, Lead
from salespulse.families.lead_response.rules import (
    UNASSIGNED,
    UNKNOWN_SOURCE,
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
RULES = (SLA_RULE, WARNING_RULE)

DeadlineOf = Callable[[float, str], float]  # (created epoch, team) -> deadline epoch
BusinessSeconds = Callable[[float, float, str], float]  # (start, end, team) -> open seconds between


class LeadResponseFamily(WindowedFamily):
    """Response times, SLA compliance and coverage per rep, team and source; awaiting leads; SLA alerts."""

    spec = SPEC

    def __init__(  # the windows' store, the leads' store, then the windows' zone and retention
        self, cells: StateStore[Cell], leads: StateStore[Lead], tz: ZoneInfo, retention_s: float,
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
        self._lead = leads.get  # the store's own methods: no wrapper call on the hot path
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
    def stores(self) -> tuple[StateStore[Cell], StateStore[Lead]]:
        """Write order: aggregates before the lead states they were derived from."""
        return (self.cells, self.leads)

    # -- loading -----------------------------------------------------------------------------------

    def on_loaded(self, partition: int) -> None:
        """Rebuild the in-memory indexes of a partition from its lead cells."""
        self.awaiting[partition] = set()
        self.deadlines[partition] = []
        self.warnings[partition] = []
        self.alerting[partition] = set()
        for lead_id, _newest, watch in self.leads.indexed(partition):
            if watch is not None:  # awaiting a touch, or alerting: the others add nothing to the indexes
                lead = self._lead(partition, lead_id)
                if lead is not None:
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

    def _index(self, partition: int, lead_id: str, lead: Lead, push: bool | None = None) -> None:
        """Index a lead: ``push=None`` while loading (heapified after), else push its deadline if ``push``."""
        self.awaiting_changed.add(partition)
        if lead.created is not None and lead.touch is None:
            self.awaiting[partition].add(lead_id)
            if lead.live and lead.breach is None and lead.deadline is not None:
                self._push(self.deadlines[partition], (lead.deadline, lead_id), push)
                warn_at = lead.warn_at
                if warn_at is not None and lead.warning is None:
                    self._push(self.warnings[partition], (warn_at, lead_id), push)
        else:
            self.awaiting[partition].discard(lead_id)
        if lead.breach is not None or lead.warning is not None:
            self.alerting.setdefault(partition, set()).add(lead_id)
            if any(key not in lead.published for _, key, _ in self._statuses(lead_id, lead)):
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
        if lead is not None and touch and lead.touch is not None and at >= lead.touch:
            return False  # a follow-up touch: the first touch stands, nothing changes (the common case)
        if lead is None:
            lead = self.leads.cell(partition, lead_id)
        if offset <= lead.wm:
            return False  # the state already holds this event (replay after a crash)
        before = contribution(lead)
        before_created = lead.created
        before_deadline = lead.deadline
        if isinstance(event, LeadCreated):
            self._on_created(lead, event, at, now if arrived is None else arrived)
        elif touch:
            self._on_touch(partition, lead_id, lead, event, at, now)
        elif isinstance(event, LeadAssigned):
            lead.assign(at, event.rep_id)  # reassignment moves the responsibility, not the clock
            if event.team:
                lead.team, lead.team_from = intern(event.team), "assigned"
        self._refresh_owners(lead)
        self._refresh_response(lead)
        after = contribution(lead)
        created_at = lead.created
        if before_created is not None and created_at is not None and before_created != created_at:
            self.add(partition, offset, before_created, now, contribution_change(before, {}))
            self.add(partition, offset, created_at, now, contribution_change({}, after))
        elif created_at is not None:
            deltas = contribution_change(before, after)
            if deltas:
                self.add(partition, offset, created_at, now, deltas)
        self.leads.touch(partition, lead_id)
        # A deadline goes on the heap once; later changes of the lead leave it where it is.
        self._index(partition, lead_id, lead, push=lead.deadline != before_deadline)
        return True

    def _on_created(self, lead: Lead, event: LeadCreated, at: float, arrived: float) -> None:
        first = lead.created is None
        created = at if lead.created is None else min(lead.created, at)
        lead.created = created
        if event.rep_id:
            lead.assign(at, event.rep_id)
        if event.team and lead.team_from in (None, "touch"):
            lead.team, lead.team_from = intern(event.team), "created"
        lead.source = lead.source or (event.source and intern(event.source))
        if event.mql is not None:
            lead.mql = event.mql
        hours_team = lead.hours_team = lead.team or UNASSIGNED  # whose business hours set the clock
        deadline = lead.deadline = self.deadline_of(created, hours_team)
        lead.warn_at = None if self.warn_of is None else self.warn_of(created, hours_team)
        if first:
            lead.live = arrived <= deadline + LIVE_GRACE_S

    def _on_touch(self, partition: int, lead_id: str, lead: Lead, event: EventBase, at: float, now: float) -> None:
        touch = lead.touch
        if touch is not None and at >= touch:
            return
        lead.touch = at
        lead.toucher = event.rep_id and intern(event.rep_id)
        if event.team and not lead.team:
            lead.team, lead.team_from = intern(event.team), "touch"
        for rule in RULES:
            if self._resolve(lead, rule, now):
                self.unpublished.add((partition, lead_id))

    @staticmethod
    def _resolve(lead: Lead, rule: str, now: float) -> bool:
        episode = lead.episode(rule)
        if episode is None or episode.resolved_at is not None:
            return False
        episode.resolved_at = now
        return True

    @staticmethod
    def _fire(lead: Lead, rule: str, now: float) -> None:
        lead.set_episode(rule, Episode(now))
        if lead.as_fired is None:
            lead.as_fired = (responsible_rep(lead), lead.team or UNASSIGNED, lead.source or UNKNOWN_SOURCE)

    @staticmethod
    def _refresh_owners(lead: Lead) -> None:
        """Current owner, and the owner at the first touch in event time (assignments may arrive late)."""
        owners = lead.owners
        lead.owner = owners[-1][1] if owners else None
        touch = lead.touch
        if touch is None:
            lead.touch_owner = None
            return
        before = [rep for at, rep in owners if at <= touch]
        created = lead.created
        if before:
            lead.touch_owner = before[-1]
        elif owners and created is not None and touch <= created and owners[0][0] <= created:
            lead.touch_owner = owners[0][1]  # a touch stamped before creation is clock skew: the first owner
        else:
            lead.touch_owner = UNASSIGNED  # nobody owned the lead when it was touched

    def _refresh_response(self, lead: Lead) -> None:
        created, touch = lead.created, lead.touch
        if created is not None and touch is not None:
            team = lead.hours_team or lead.team or UNASSIGNED
            lead.response_s = max(0.0, self.business_seconds(created, touch, team))

    # -- the clock ---------------------------------------------------------------------------------

    def due_alerts(self, partitions: Iterable[int], now: float) -> int:
        """Fire every live lead of these partitions that reached its deadline untouched; returns how many."""
        fired = 0
        for partition in partitions:
            changed: set[str] = set()
            for warn_at, lead_id, lead in self._due(partition, self.warnings.get(partition), now):
                if (
                    lead.warning is not None
                    or lead.warn_at != warn_at
                    or lead.deadline is None
                    or lead.deadline <= now  # past the deadline already (a worker was down): the breach says it
                ):
                    continue
                self._fire(lead, WARNING_RULE, now)
                self._after_fire(partition, lead_id, changed)
                fired += 1
            for deadline, lead_id, lead in self._due(partition, self.deadlines.get(partition), now):
                if lead.deadline != deadline:
                    continue  # its deadline moved (an earlier creation)
                self._fire(lead, SLA_RULE, now)
                self._resolve(lead, WARNING_RULE, now)  # the breach takes over from its warning
                self._after_fire(partition, lead_id, changed)
                fired += 1
            if changed:
                self.leads.write_many(partition, changed)  # one changelog record per partition and tick
        return fired

    def _due(self, partition: int, heap: list[tuple[float, str]] | None, now: float) -> Iterator[tuple[float, str, Lead]]:
        """Pop the entries of a deadline heap that are due, and yield those of live leads still untouched and
        without a breach (the others were touched or alerted since they were pushed)."""
        while heap and heap[0][0] <= now:
            instant, lead_id = heapq.heappop(heap)
            lead = self._lead(partition, lead_id)
            if lead is not None and lead.touch is None and lead.breach is None and lead.live:
                yield instant, lead_id, lead

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
            published = lead.published
            for alert, key, _ in self._statuses(lead_id, lead):
                if key not in published:
                    out.append((partition, lead_id, alert))
        return out

    def _statuses(self, lead_id: str, lead: Lead, now: float | None = None) -> Iterator[tuple[dict[str, Any], str, float]]:
        """Every status the lead's alerts went through, oldest first: (alert JSON, published key, emitted at).

        With ``now``, a firing status is stamped ``now`` (its age grows on each resend to Alertmanager).
        """
        for rule in RULES:
            episode = lead.episode(rule)
            if episode is None:
                continue
            firing = self.alert_json(lead_id, lead, "firing", episode.fired_at, rule)
            if episode.resolved_at is None:
                if now is not None:
                    firing = self.alert_json(lead_id, lead, "firing", now, rule)
                yield firing, published_key(firing), episode.fired_at
                continue
            yield firing, published_key(firing), episode.fired_at
            resolved = self.alert_json(lead_id, lead, "resolved", episode.resolved_at, rule)
            yield resolved, published_key(resolved), episode.resolved_at

    def alert_json(
        self, lead_id: str, lead: Lead, status: str, emitted: float, rule: str = SLA_RULE
    ) -> dict[str, Any]:
        """The contract's alert message for one lead, rule and status (``deadline``: when the rule fires)."""
        rep, team, source = lead.as_fired or (responsible_rep(lead), lead.team or UNASSIGNED, lead.source or UNKNOWN_SOURCE)
        created, deadline = cast(float, lead.created), cast(float, lead.deadline)  # an alerted lead has both
        out: dict[str, Any] = {
            "alert": rule,
            "status": status,
            "lead_id": lead_id,
            "rep_id": rep,
            "team": team,
            "source": source,
            "created_at": iso(created),
            "deadline": iso(deadline),
            "emitted_at": iso(emitted),
            "age_seconds": round(emitted - created, 3),
        }
        if rule == WARNING_RULE:
            out["deadline"] = iso(cast(float, lead.warn_at))
            out["sla_deadline"] = iso(deadline)
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
            if status not in lead.published:
                lead.published += (status,)
                changed.setdefault(partition, set()).add(lead_id)
            if all(key in lead.published for _, key, _ in self._statuses(lead_id, lead)):
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
                if lead is None or not lead.live or lead.created is None:
                    continue
                team = lead.team or UNASSIGNED
                count, oldest = out.get(team, (0, 0.0))
                out[team] = (count + 1, max(oldest, now - lead.created))
        return out

    def awaiting_leads(self, partition: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """A partition's live leads awaiting a first touch: their count and the ``limit`` oldest."""
        leads: list[tuple[float, str, Lead]] = []
        for lead_id in self.awaiting.get(partition, ()):
            lead = self.leads.get(partition, lead_id)
            if lead is not None and lead.live and lead.created is not None:
                leads.append((lead.created, lead_id, lead))
        oldest = heapq.nsmallest(limit, leads, key=lambda entry: (entry[0], entry[1]))
        return len(leads), [
            {
                "lead_id": lead_id,
                "rep_id": lead.owner or UNASSIGNED,
                "team": lead.team or UNASSIGNED,
                "source": lead.source or UNKNOWN_SOURCE,
                "created_at": created,
                "deadline": lead.deadline,
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
                if lead is not None and lead.deadline is not None and lead.deadline <= now:
                    key = (lead.team or UNASSIGNED, responsible_rep(lead))
                    totals[key] = totals.get(key, 0) + 1
        return totals

    # -- outputs -----------------------------------------------------------------------------------

    def expire(self, partition: int, now: float) -> int:
        """Expire window cells, and lead states created (or last touched) before retention."""
        expired = super().expire(partition, now)
        cutoff = now - self.retention_s
        stale = []
        for lead_id, newest, _watch in self.leads.indexed(partition):
            if newest < cutoff and (partition, lead_id) not in self.unpublished:
                stale.append(lead_id)
        if stale:
            self.leads.delete_many(partition, stale)  # one changelog record, not one per lead
            awaiting = self.awaiting.get(partition, set())
            awaiting.difference_update(stale)
            self.awaiting_changed.add(partition)
            self.alerting.get(partition, set()).difference_update(stale)
        return expired + len(stale)

