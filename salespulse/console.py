"""What a person sees on the console: a start banner (where everything is) and a summary line every 10 s.

Both go through logging (logger ``salespulse.console``), so ``--log-format json`` turns them into JSON
objects like every other line. The summary reads the process's own metrics and state, nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mode import Service
from prometheus_client.metrics import MetricWrapperBase

from salespulse import __version__
from salespulse.settings import Settings

log = logging.getLogger("salespulse.console")

SUMMARY_INTERVAL_S = 10.0


def http_base(host: str, port: int) -> str:
    """``http://host:port`` as a browser or curl takes it (IPv6 in brackets)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def redacted(url: str, mask: str = "****") -> str:
    """``url`` with any password replaced by ``mask`` (a Redis URL may carry one)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}{mask}@{host}"))


@dataclass(frozen=True, slots=True)
class Place:
    """Where one thing is, for the banner: a label, a location and an optional hint."""

    label: str
    where: str
    hint: str = ""


def banner(title: str, places: Iterable[Place]) -> list[str]:
    """The banner's lines: a title, then one aligned line per place."""
    places = list(places)
    width = max((len(place.label) for place in places), default=0)
    lines = [f"salespulse {__version__} {title}"]
    for place in places:
        lines.append(f"  {place.label.ljust(width)}  {place.where}{f'   {place.hint}' if place.hint else ''}")
    return lines


def http_places(host: str, port: int, *, webhooks: bool, board: bool) -> list[Place]:
    base = http_base(host, port)
    places = []
    if webhooks:
        places.append(Place("webhooks", f"POST {base}/webhooks/events", "(signed when SALESPULSE_WEBHOOK_SECRET is set)"))
    places.append(Place("metrics", f"{base}/metrics", f"health: {base}/healthz, {base}/readyz"))
    if board:
        places.append(Place("board", f"{base}/"))
    return places


def redis_place(url: str) -> Place:
    example = redacted(url, "<password>")
    return Place("redis", redacted(url), f"try: redis-cli -u {example} --scan --pattern 'salespulse:*'")


def data_place(data_dir: Path, hint: str = "(SALESPULSE_DATA_DIR)") -> Place:
    return Place("data", str(data_dir.resolve()), hint)


def worker_banner(settings: Settings) -> list[str]:
    return banner(
        f"worker ({settings.app_id}: {', '.join(settings.family_names)}); a summary line every {SUMMARY_INTERVAL_S:g} s",
        [
            *http_places(settings.http_host, settings.http_port, webhooks=False, board=False),
            Place("kafka", settings.kafka_url or ""),
            redis_place(settings.redis_url or ""),
            data_place(settings.data_dir),
        ],
    )


def ingest_banner(settings: Settings, crm_paths: Iterable[str]) -> list[str]:
    base = http_base(settings.http_host, settings.http_port)
    return banner(
        f"ingest; a summary line every {SUMMARY_INTERVAL_S:g} s",
        [
            *http_places(settings.http_host, settings.http_port, webhooks=True, board=False),
            *(Place("crm", f"POST {base}{path}") for path in crm_paths),
            Place("kafka", settings.kafka_url or ""),
        ],
    )


def run_banner(
    settings: Settings, simulated: bool, kafka_hint: str = "", redis_hint: str = "", data_hint: str = "(SALESPULSE_DATA_DIR)"
) -> list[str]:
    """``run``'s banner; the hints say which servers are the embedded ones and what the data directory keeps."""
    redis = redis_place(settings.redis_url or "")
    return banner(
        f"run: ingest and a worker{' with simulated traffic' if simulated else ''}; Ctrl-C stops everything; "
        f"a summary line every {SUMMARY_INTERVAL_S:g} s",
        [
            *http_places(settings.http_host, settings.http_port, webhooks=True, board=True),
            Place("kafka", settings.kafka_url or "", kafka_hint),
            Place(redis.label, redis.where + redis_hint, redis.hint),
            data_place(settings.data_dir, data_hint),
        ],
    )


def announce(lines: Iterable[str]) -> None:
    for line in lines:
        log.info("%s", line)


def counter_total(metric: MetricWrapperBase) -> float:
    """The sum of a (labelled) counter over all its label values."""
    return sum(
        sample.value for family in metric.collect() for sample in family.samples if sample.name.endswith("_total")
    )


def counter_total_where(metric: MetricWrapperBase, label: str, keep: Callable[[str], bool]) -> float:
    """The sum of a labelled counter over the label values ``keep`` accepts."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and keep(sample.labels.get(label, ""))
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative counts at one moment; the summary line shows rates between two of them."""

    at: float
    events: float
    leads_waiting: int | None = None
    p50_today_s: float | None = None
    alerts_fired: float | None = None


def duration(seconds: float) -> str:
    """``2m05s``, ``41s``, ``1h07m``: short enough for a summary line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary_line(before: Snapshot, now: Snapshot, what: str = "events") -> tuple[str, dict[str, float | int | None]]:
    """The summary text and the same numbers as fields (for JSON logs)."""
    rate = (now.events - before.events) / max(now.at - before.at, 1e-9)
    fields: dict[str, float | int | None] = {f"{what}_per_s": round(rate, 1)}
    parts = [f"{rate:.1f} {what}/s"]
    if now.leads_waiting is not None:
        fields["leads_waiting"] = now.leads_waiting
        parts.append(f"{now.leads_waiting} leads waiting")
    if now.leads_waiting is not None or now.p50_today_s is not None:
        fields["p50_speed_to_lead_today_s"] = now.p50_today_s
        parts.append(f"p50 speed to lead today {'-' if now.p50_today_s is None else duration(now.p50_today_s)}")
    if now.alerts_fired is not None:
        fields["alerts_fired"] = int(now.alerts_fired)
        parts.append(f"{int(now.alerts_fired)} alerts fired")
    return "summary: " + ", ".join(parts), fields


class ConsoleSummary(Service):
    """Logs :func:`summary_line` every ``interval_s`` from ``snapshot`` (the process's own numbers)."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], what: str = "events", interval_s: float = SUMMARY_INTERVAL_S, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.snapshot = snapshot
        self.what = what
        self.interval_s = interval_s

    @Service.task
    async def _report(self) -> None:
        before = self.snapshot()
        while not self.should_stop:
            await self.sleep(self.interval_s)
            if self.should_stop:
                return
            now = self.snapshot()
            text, fields = summary_line(before, now, self.what)
            log.info("%s", text, extra={"summary": fields})
            before = now


def monotonic_snapshot(events: Callable[[], float]) -> Callable[[], Snapshot]:
    """A snapshot of just a cumulative count (the ingest role: events published)."""
    return lambda: Snapshot(at=time.monotonic(), events=events())
