"""The ``SALESPULSE_CONFIG`` TOML file: business hours, rep → team directory, lead-response SLA,
pipelines (stage order, won/lost stages, default probabilities, loss reasons), quotas, activity
targets and the activity settings.

Parsed into strict pydantic models: an unknown or misspelt key is an error, never silently
ignored. ``[crm]`` (CRM id mappings) is modelled in :mod:`salespulse.crm_config`. Every problem
is raised as :class:`ConfigError` naming the file and the dotted key (``business_hours.teams.team-apac.hours.mon[0]``). See ``docs/config.example.toml``.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from salespulse.crm_config import CrmSection, StageMapping
from salespulse.families.business_hours import END_OF_DAY, BusinessHours
from salespulse.families.pipeline.pipelines import (
    DEFAULT_LOSS_REASONS,
    DEFAULT_PIPELINES,
    PipelineSpec,
    Pipelines,
)
from salespulse.toml_lines import key_lines, line_of

__all__ = [
    "ActivityConfig",
    "AlertsConfig",
    "TargetPeriods",
    "TargetsSection",
    "WEEKDAYS",
    "BusinessHoursSection",
    "BusinessHoursSpec",
    "Config",
    "ConfigError",
    "LeadResponseConfig",
    "PipelineConfig",
    "WeeklyHours",
    "load_config",
    "parse_interval",
]

#: Weekday keys of ``hours`` tables, Monday first (index = ``date.weekday()``).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(ValueError):
    """The config file is missing, is not TOML, or holds a bad value; ``path`` and ``key`` say where."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        key: str | None = None,
        problems: list[tuple[str, int | None, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        #: ``(dotted key, line or None, what is wrong)`` per invalid value.
        self.problems = problems or []

    def lines(self) -> list[str]:
        """One line per problem, ``file:line: key: what is wrong`` (the form compilers use), for the console."""
        if not self.problems:
            return [" ".join(str(self).split())]
        return [
            f"{self.path}{f':{line}' if line else ''}: {key}: {message}" for key, line, message in self.problems
        ]


def parse_interval(text: str) -> tuple[time, time]:
    """``"09:00-17:00"`` → ``(time(9), time(17))``; ``"24:00"`` as an end is :data:`END_OF_DAY`."""
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(f"expected 'HH:MM-HH:MM' (e.g. '09:00-17:00'), got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (0 <= h1 <= 23 and 0 <= m1 <= 59):
        raise ValueError(f"bad start time in {text!r}")
    if not ((0 <= h2 <= 23 and 0 <= m2 <= 59) or (h2 == 24 and m2 == 0)):
        raise ValueError(f"bad end time in {text!r} (use 24:00 for end of day)")
    start = time(h1, m1)
    end = END_OF_DAY if h2 == 24 else time(h2, m2)
    if not start < end:
        raise ValueError(f"interval {text!r} must start before it ends (intervals cannot cross midnight; split them)")
    return start, end


def _check_interval(text: str) -> str:
    parse_interval(text)
    return text.strip()


IntervalText = Annotated[str, AfterValidator(_check_interval)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeeklyHours(_Model):
    """Open intervals per weekday, e.g. ``mon = ["09:00-12:00", "13:00-17:00"]``; a missing day is closed."""

    mon: list[IntervalText] = Field(default_factory=list)
    tue: list[IntervalText] = Field(default_factory=list)
    wed: list[IntervalText] = Field(default_factory=list)
    thu: list[IntervalText] = Field(default_factory=list)
    fri: list[IntervalText] = Field(default_factory=list)
    sat: list[IntervalText] = Field(default_factory=list)
    sun: list[IntervalText] = Field(default_factory=list)

    @field_validator(*WEEKDAYS)
    @classmethod
    def _no_overlap(cls, value: list[str]) -> list[str]:
        intervals = sorted(parse_interval(v) for v in value)
        for (_, prev_end), (start, _) in zip(intervals, intervals[1:]):
            if start < prev_end:
                raise ValueError(f"intervals overlap: {', '.join(value)}")
        return value

    def to_weekly(self) -> dict[int, list[tuple[time, time]]]:
        out: dict[int, list[tuple[time, time]]] = {}
        for index, name in enumerate(WEEKDAYS):
            intervals = [parse_interval(v) for v in getattr(self, name)]
            if intervals:
                out[index] = intervals
        return out


class BusinessHoursSpec(_Model):
    """One schedule: time zone, weekly hours, holidays (whole local days closed)."""

    timezone: str
    hours: WeeklyHours
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/Oslo')") from exc
        return value

    def to_business_hours(self) -> BusinessHours:
        return BusinessHours(
            tz=ZoneInfo(self.timezone), weekly=self.hours.to_weekly(), holidays=frozenset(self.holidays)
        )


class BusinessHoursSection(_Model):
    """``[business_hours.default]`` and ``[business_hours.teams.<team>]``."""

    default: BusinessHoursSpec | None = None
    teams: dict[str, BusinessHoursSpec] = Field(default_factory=dict)


class LeadResponseConfig(_Model):
    """``[lead_response]``: SLA, early-warning fraction and which activity kinds count as touches."""

    sla_seconds: int | None = Field(None, gt=0, strict=True)
    #: The pre-breach warning fires at this share of the SLA (business time); 0 turns it off.
    warn_fraction: float = Field(0.8, ge=0, lt=1)
    outbound_activity_kinds: frozenset[Annotated[str, Field(min_length=1)]] = frozenset()

    def effective_sla_seconds(self, env_default: int) -> int:
        """The SLA to use: ``sla_seconds`` when set, else the environment's ``SALESPULSE_LEAD_RESPONSE_SLA_SECONDS``."""
        return self.sla_seconds if self.sla_seconds is not None else env_default


StageName = Annotated[str, Field(min_length=1, max_length=64)]
Period = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]


class PipelineConfig(_Model):
    """``[pipelines.<name>]``: open stages in funnel order, won and lost stages, default probabilities.

    A stage may appear only once; ``probabilities`` may name only stages of this pipeline. A deal
    entering a won (lost) stage is closed as won (lost), as if a ``deal.won`` (``deal.lost``) came.
    """

    stages: list[StageName] = Field(min_length=1)
    won_stages: list[StageName] = Field(default_factory=list)
    lost_stages: list[StageName] = Field(default_factory=list)
    probabilities: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    loss_reasons: list[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]] | None = None
    #: ``deal_stalled`` alerts: an open stage -> business days a deal may stay in it (fractions allowed).
    stalled_after_days: dict[str, Annotated[float, Field(gt=0, le=365)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _stages_named_once_and_probabilities_known(self) -> "PipelineConfig":
        named = [*self.stages, *self.won_stages, *self.lost_stages]
        repeated = sorted({stage for stage in named if named.count(stage) > 1})
        if repeated:
            raise ValueError(f"stage(s) named more than once in this pipeline: {', '.join(repeated)}")
        unknown = sorted(set(self.probabilities) - set(named))
        if unknown:
            raise ValueError(f"probabilities for stage(s) not in this pipeline: {', '.join(unknown)}")
        not_open = sorted(set(self.stalled_after_days) - set(self.stages))
        if not_open:
            raise ValueError(f"stalled_after_days for stage(s) that are not open stages of this pipeline: {', '.join(not_open)}")
        return self

    def to_spec(self) -> PipelineSpec:
        return PipelineSpec(
            stages=tuple(self.stages),
            won_stages=tuple(self.won_stages),
            lost_stages=tuple(self.lost_stages),
            probabilities=dict(self.probabilities),
            loss_reasons=tuple(self.loss_reasons) if self.loss_reasons is not None else DEFAULT_LOSS_REASONS,
        )
def crm_pipeline_spec(stages: list[StageMapping]) -> PipelineSpec:
    """A pipeline from ``[crm]`` stages in CRM order: open ones are the funnel, closed ones close it."""
    return PipelineSpec(
        stages=tuple(s.stage for s in stages if not s.closed),
        won_stages=tuple(s.stage for s in stages if s.won),
        lost_stages=tuple(s.stage for s in stages if s.closed and not s.won),
        probabilities={s.stage: s.probability for s in stages if s.probability is not None},
    )


#: A target's kind: a published count field of the activity family (``call``, ``call:connected``,
#: ``email_sent``, ``meeting_booked``, a logged kind such as ``visit``, ``total``) or of the engagement
#: family (``emails_personalized``, ``emails_sent`` ...).
TargetKind = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}(:[a-z0-9_]{1,64})?$")]
TargetCounts = dict[TargetKind, Annotated[int, Field(gt=0, strict=True)]]


class TargetPeriods(_Model):
    """Targets per calendar period: ``day = { call = 40 }``, ``week = {...}``, ``month = {...}``."""

    day: TargetCounts = Field(default_factory=dict)
    week: TargetCounts = Field(default_factory=dict)
    month: TargetCounts = Field(default_factory=dict)


class TargetsSection(_Model):
    """``[targets.default]``, ``[targets.teams.<team>]``, ``[targets.reps.<rep>]``: per kind, the rep's
    own target wins over the team's, which wins over the default."""

    default: TargetPeriods = Field(default_factory=TargetPeriods)
    teams: dict[str, TargetPeriods] = Field(default_factory=dict)
    reps: dict[str, TargetPeriods] = Field(default_factory=dict)

    @property
    def configured(self) -> bool:
        """True if any target is set."""
        periods = (self.default, *self.teams.values(), *self.reps.values())
        return any(p.day or p.week or p.month for p in periods)

    def for_rep(self, rep: str, team: str | None, period: str) -> dict[str, int]:
        """The rep's targets for ``period`` (``day``, ``week`` or ``month``), kind by kind."""
        out = dict(getattr(self.default, period))
        if team is not None and team in self.teams:
            out.update(getattr(self.teams[team], period))
        if rep in self.reps:
            out.update(getattr(self.reps[rep], period))
        return out


class ActivityConfig(_Model):
    """``[activity]``: when a lead that was touched and did not convert counts as gone quiet."""

    quiet_after_days: float = Field(14.0, gt=0, le=365)


class LeadGoingColdConfig(_Model):
    """``[alerts.lead_going_cold]``: a lead touched once and not again within ``days`` business days."""

    #: Every team's business days (unset: only the teams named below).
    days: Annotated[float, Field(gt=0, le=365)] | None = None
    #: Per team, winning over ``days``.
    teams: dict[str, Annotated[float, Field(gt=0, le=365)]] = Field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.days is not None or bool(self.teams)

    def days_for(self, team: str) -> float | None:
        return self.teams.get(team, self.days)


LocalTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class RepNoActivityConfig(_Model):
    """``[alerts.rep_no_activity]``: a rep of ``[teams]`` with no outbound activity by ``by`` (local time of
    the team's business hours) on a business day."""

    #: Every team's local time ``HH:MM`` (unset: only the teams named below).
    by: LocalTime | None = None
    #: Per team, winning over ``by``.
    teams: dict[str, LocalTime] = Field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.by is not None or bool(self.teams)

    def by_for(self, team: str) -> time | None:
        text = self.teams.get(team, self.by)
        return None if text is None else time.fromisoformat(text)


class AlertsConfig(_Model):
    """``[alerts]``: links in per-lead alerts and how often firing alerts are re-sent to Alertmanager."""

    #: The lead's page in the CRM, ``{lead_id}`` replaced (e.g. HubSpot's record URL).
    lead_url: Annotated[str, Field(pattern=r"\{lead_id\}")] | None = None
    #: Per lead source (each CRM's leads carry their source): a template that wins over ``lead_url``.
    lead_url_by_source: dict[str, Annotated[str, Field(pattern=r"\{lead_id\}")]] = Field(default_factory=dict)
    #: Firing alerts are posted again this often (keep it well below Alertmanager's ``resolve_timeout``).
    resend_seconds: float = Field(60.0, gt=0, le=3600)
    #: Resolved alerts are posted again (with ``endsAt``) for this long after they resolved.
    resolved_resend_seconds: float = Field(600.0, ge=0, le=86400)
    lead_going_cold: LeadGoingColdConfig = Field(default_factory=LeadGoingColdConfig)
    rep_no_activity: RepNoActivityConfig = Field(default_factory=RepNoActivityConfig)

    def link(self, alert: Any) -> str | None:
        """The CRM link of an alert's lead, or None when no template applies."""
        lead_id = alert.get("lead_id")
        template = self.lead_url_by_source.get(alert.get("source") or "", self.lead_url)
        if lead_id is None or template is None:
            return None
        return template.replace("{lead_id}", str(lead_id))


class Config(_Model):
    """The whole config file. ``Config()`` is the default: around the clock, no teams, env SLA."""

    business_hours: BusinessHoursSection = Field(default_factory=BusinessHoursSection)
    team_of_rep: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict, alias="teams")
    #: ``[rep_names]``: rep id -> the name boards show (the live board, Grafana's ``salespulse_rep_info``).
    rep_names: dict[str, Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=dict)
    lead_response: LeadResponseConfig = Field(default_factory=LeadResponseConfig)
    #: The currency of deal amounts and quotas whose events (or config) name none.
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    #: ``[quotas.<rep>]``: period (YYYY-MM) → amount in ``currency``; a ``quota.set`` event overrides it.
    quotas: dict[str, dict[Period, Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]]] = Field(default_factory=dict)
    targets: TargetsSection = Field(default_factory=TargetsSection)
    activity: ActivityConfig = Field(default_factory=ActivityConfig)
    crm: CrmSection = Field(default_factory=CrmSection)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    _default_hours: BusinessHours = PrivateAttr()
    _team_hours: dict[str, BusinessHours] = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        # Build each schedule once so its per-day cache is shared by every lookup.
        default = self.business_hours.default
        self._default_hours = default.to_business_hours() if default is not None else BusinessHours.always()
        self._team_hours = {team: spec.to_business_hours() for team, spec in self.business_hours.teams.items()}

    def business_hours_for(self, team: str | None) -> BusinessHours:
        """The team's schedule, else ``business_hours.default``, else around the clock."""
        if team is not None:
            hours = self._team_hours.get(team)
            if hours is not None:
                return hours
        return self._default_hours

    def pipeline_specs(self) -> Pipelines:
        """The configured pipelines (stage order, won/lost stages, probabilities, loss reasons).

        With no ``[pipelines]`` table: the built-in ``default`` pipeline (qualification, discovery,
        proposal, negotiation; closed_won, closed_lost), which the simulator drives. Pipelines whose
        ``[crm]`` stages carry an ``order`` (as ``salespulse crm check --write`` writes them) are added;
        a ``[pipelines]`` table of the same name wins.
        """
        specs = dict(DEFAULT_PIPELINES) if not self.pipelines else {}
        for name, stages in self.crm.ordered_stages().items():
            specs[name] = crm_pipeline_spec(stages)
        specs.update({name: spec.to_spec() for name, spec in self.pipelines.items()})
        return Pipelines(specs)

    def team_for_rep(self, rep: str | None) -> str | None:
        """The rep's team from the ``[teams]`` directory, or None."""
        return self.team_of_rep.get(rep) if rep is not None else None

    def targets_for(self, rep: str, period: str) -> dict[str, int]:
        """The rep's activity targets for ``day``, ``week`` or ``month`` (its team from ``[teams]``)."""
        return self.targets.for_rep(rep, self.team_for_rep(rep), period)


def load_config(path: Path | str | None) -> Config:
    """Read and validate the TOML config at ``path``; ``None`` gives the defaults.

    Raises :class:`ConfigError` (with ``path`` and, for a bad value, ``key``) when the file is
    missing or unreadable, is not valid TOML, or does not validate.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 TOML: {exc}", path=path) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML config file", path=path) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}", path=path) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        places = key_lines(text)
        problems = [(_dotted(err["loc"], data), line_of(err["loc"], places), _message(err)) for err in exc.errors()]
        lines = "\n".join(f"  {key}: {msg}{f' (line {line})' if line else ''}" for key, line, msg in problems)
        first_key = problems[0][0] if problems else None
        message = f"{path}: invalid config ({len(problems)} problem(s)):\n{lines}"
        raise ConfigError(message, path=path, key=first_key, problems=problems) from None


def _dotted(loc: tuple[int | str, ...], data: Any) -> str:
    """A pydantic error location as a dotted TOML key.

    ``('business_hours', 'teams', 'team.x', 'hours', 'mon', 0)`` → ``business_hours.teams."team.x".hours.mon[0]``.
    """
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself is already named
            continue
        if isinstance(part, int) and isinstance(data, list):
            out += f"[{part}]"
            data = data[part] if 0 <= part < len(data) else None
            continue
        name = str(part)
        if name == "[key]":
            continue  # pydantic's marker for "the key itself is bad": the key is already named
        out += ("." if out else "") + (name if _BARE_KEY.match(name) else json.dumps(name))
        data = data.get(name) if isinstance(data, dict) else None
    return out or "<top level>"


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key (not permitted here)"
    if err["type"] == "missing":
        return "required key is missing"
    return msg.removeprefix("Value error, ")
