"""The ``salespulse`` command: run, worker, ingest, board, simulate, replay, schemas and crm check."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.text import Text

from salespulse import __version__
from salespulse.logs import LOG_FORMATS, LOG_LEVELS, setup_logging
from salespulse.preflight import (
    ConfigurationError,
    check_config_file,
    check_embedded_installed,
    check_port_free,
)
from salespulse.settings import METRIC_FAMILIES, Settings

# soft_wrap: a line is never folded at 80 columns when stderr is a file or a pipe (log collectors).
console = Console(stderr=True, soft_wrap=True)


def _fail(*lines: str) -> None:
    """Print each line as ``error: ...`` and exit with status 2 (a configuration mistake)."""
    for line in lines:
        console.print(Text.assemble(("error: ", "red"), line))
    raise SystemExit(2)


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with command-line flags (when given) taking precedence.

    Any mistake, in a setting of today or one added later, is one line naming the variable.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(p) for p in error["loc"])
            source = " (command-line flag)" if field in given else ""
            # A check across settings (no field) names its variables in the message itself.
            where = f"SALESPULSE_{field.upper()}{source}: " if field else ""
            lines.append(f"{where}{error['msg'].removeprefix('Value error, ')}")
        _fail(*lines)
    except SettingsError as exc:  # a value pydantic-settings could not even decode (e.g. bad JSON)
        _fail(f"{exc}".replace("\n", " "))
    raise AssertionError("unreachable")


def _run_role(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        code = fn(*args, **kwargs)
    except ConfigurationError as exc:
        _fail(*exc.lines)
    raise SystemExit(code)


def _preflight(settings: Settings, *, listens: bool = True, embedded: bool = False) -> None:
    """Everything checkable before a role starts anything: the config file, the port, the embedded extra."""
    try:
        check_config_file(settings)
        if embedded:
            check_embedded_installed(settings)
        if listens:
            check_port_free(settings.http_host, settings.http_port)
    except ConfigurationError as exc:
        _fail(*exc.lines)


http_options = [
    click.option("--host", "http_host", help="HTTP listen address [env SALESPULSE_HTTP_HOST, default 127.0.0.1]"),
    click.option("--port", "http_port", type=int, help="HTTP port [env SALESPULSE_HTTP_PORT, default 8080]"),
]
infra_options = [
    click.option("--kafka-url", help="kafka://host:port [env SALESPULSE_KAFKA_URL]"),
    click.option("--redis-url", help="redis://host:port/db [env SALESPULSE_REDIS_URL]"),
    click.option("--partitions", type=int, help="partitions of salespulse.events [env SALESPULSE_PARTITIONS, 4]"),
    click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        help="the TOML config file (docs/config.example.toml) [env SALESPULSE_CONFIG]",
    ),
]
families_option = click.option(
    "--families",
    help=f"comma-separated metric families to run: {', '.join(METRIC_FAMILIES)} [env SALESPULSE_FAMILIES, all]",
)
log_options = [
    click.option(
        "--log-level",
        "--loglevel",
        "loglevel",
        default="info",
        show_default=True,
        type=click.Choice(LOG_LEVELS),
        help="debug also shows Faust's and aiokafka's internal logging (kept at WARNING otherwise)",
    ),
    click.option(
        "--log-format",
        "logformat",
        default="text",
        show_default=True,
        type=click.Choice(LOG_FORMATS),
        help="json: one JSON object per line, for log platforms",
    ),
]


def _apply(options: list[Any]) -> Any:
    def decorator(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="salespulse")
def main() -> None:
    """salespulse: real-time sales metrics from CRM webhooks (Kafka, Faust, Redis, Prometheus).

    Configuration comes from SALESPULSE_* environment variables; flags override them.
    """


@main.command()
@_apply(http_options + infra_options)
@families_option
@click.option("--simulate/--no-simulate", default=False, help="Also send realistic synthetic CRM traffic to itself.")
@click.option("--leads-per-minute", default=30.0, show_default=True, help="New leads per real minute.")
@click.option("--speedup", default=10.0, show_default=True, help="Simulated delays are divided by this.")
@click.option(
    "--ephemeral",
    is_flag=True,
    help="Keep nothing: memory-only broker and Redis, no journal (demos, tests). Default: durable in SALESPULSE_DATA_DIR.",
)
@_apply(log_options)
def run(
    simulate: bool, leads_per_minute: float, speedup: float, ephemeral: bool, loglevel: str, logformat: str, **flags: Any
) -> None:
    """Everything on one machine: embedded broker and Redis (unless URLs are given), webhooks and a worker.

    One HTTP port serves the live board at /, /webhooks/events, /healthz, /readyz and /metrics. Ctrl-C stops
    everything. Accepted events are journaled in SALESPULSE_DATA_DIR (default .salespulse) and Redis keeps
    an append-only file there, so a stop and a start keep every number (unless --ephemeral).
    """
    from salespulse.roles import run_all

    settings = _settings(**flags)
    options = (
        {
            "duration_s": None,
            # The simulator divides every gap by the speedup, lead arrivals included: keep the real rate.
            "leads_per_minute": leads_per_minute / speedup,
            "reps": 12,
            "teams": 3,
            "seed": None,
            "speedup": speedup,
        }
        if simulate
        else None
    )
    _preflight(settings, embedded=True)
    _run_role(run_all, settings, options, loglevel, setup_logging(loglevel, logformat), ephemeral=ephemeral)


@main.command()
@_apply(http_options + infra_options)
@families_option
@_apply(log_options)
def worker(loglevel: str, logformat: str, **flags: Any) -> None:
    """A stream worker: consumes salespulse.events, keeps tables, publishes to Redis, metric topics, /metrics.

    Start several with the same SALESPULSE_APP_ID to share the partitions; run families in separate
    groups (another SALESPULSE_APP_ID each, --families) to split the work (docs/operations.md).
    """
    from salespulse.roles import run_worker

    settings = _settings(**flags)
    _preflight(settings)
    _run_role(run_worker, settings, loglevel, setup_logging(loglevel, logformat))


@main.command()
@_apply(http_options + infra_options)
@click.option("--insecure", is_flag=True, help="Accept unsigned webhooks when no SALESPULSE_WEBHOOK_SECRET is set.")
@_apply(log_options)
def ingest(insecure: bool, loglevel: str, logformat: str, **flags: Any) -> None:
    """The webhook server: verifies, validates and publishes events to salespulse.events."""
    from salespulse.roles import run_ingest

    settings = _settings(**flags)
    _preflight(settings)
    _run_role(run_ingest, settings, insecure, loglevel, setup_logging(loglevel, logformat))


@main.command()
@_apply(http_options)
@click.option("--redis-url", help="redis://host:port/db [env SALESPULSE_REDIS_URL]")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="config file: rep names, stage order, currency [env SALESPULSE_CONFIG]")
@_apply(log_options)
def board(loglevel: str, logformat: str, **flags: Any) -> None:
    """The live board over Redis: speed to lead, leads waiting, alerts, funnel, forecast, activity.

    Serves the page at / (updated live by server-sent events from /board/events), /api/board (JSON),
    /healthz and /readyz. Reads Redis only; run as many as you like. `salespulse run` serves the same at /.
    """
    from salespulse.roles import run_board

    settings = _settings(**flags)
    _preflight(settings)
    _run_role(run_board, settings, loglevel, setup_logging(loglevel, logformat))


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Base URL of a running server.")
@click.option("--duration", type=float, default=None, help="Seconds to run (default: until Ctrl-C).")
@click.option("--leads-per-minute", default=30.0, show_default=True, help="New leads per real minute.")
@click.option("--reps", default=12, show_default=True)
@click.option("--teams", default=3, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for reproducible traffic.")
@click.option("--speedup", default=10.0, show_default=True, help="Simulated delays are divided by this.")
@click.option("--give-up-after", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Stop with an error once nothing could be delivered for this many seconds.")
def simulate(
    url: str, duration: float | None, leads_per_minute: float, reps: int, teams: int, seed: int | None, speedup: float,
    give_up_after: float,
) -> None:
    """Send realistic synthetic CRM traffic (leads, calls, emails, meetings, deals) to a running server.

    Signs requests with SALESPULSE_WEBHOOK_SECRET when it is set. Exits with status 1 when the server
    cannot be reached for --give-up-after seconds, answers 401/403 (wrong secret) or 404 (wrong URL),
    or rejects events.
    """
    from salespulse.simulate import simulate as run_simulation

    settings = _settings()
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    try:
        stats = asyncio.run(
            run_simulation(
                url,
                secret=secret,
                duration_s=duration,
                leads_per_minute=leads_per_minute / speedup,
                reps=reps,
                teams=teams,
                seed=seed,
                speedup=speedup,
                console=Console(soft_wrap=True),
                give_up_after_s=give_up_after,
            )
        )
    except KeyboardInterrupt:
        return
    if stats.failure is not None:
        console.print(Text.assemble(("error: ", "red"), stats.failure))
        raise SystemExit(1)
    if stats.rejected:
        console.print(Text.assemble(("error: ", "red"), f"the server rejected {stats.rejected} events (see above)"))
        raise SystemExit(1)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise click.BadParameter(f"expected FIELD=VALUE, got {value!r}", param_hint=option)
        pairs[name.strip()] = target.strip()
    return pairs


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto", show_default=True,
              help="auto: by extension (.csv is CSV, anything else JSON Lines).")
@click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
              help="CSV: take event FIELD from COLUMN (repeat), e.g. --map lead_id=Contact_ID.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="CSV: a constant for every row (repeat), e.g. --set type=call.logged.")
@click.option("--rate", type=float, default=None, help="At most this many events per second (default: unlimited).")
@click.option("--position-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the line reached is kept, to resume after a stop [default: FILE.position].")
@click.option("--restart", is_flag=True, help="Ignore the saved position and start from the first line.")
@click.option("--strict", is_flag=True, help="Stop at the first bad row (default: report it and go on).")
@click.option("--kafka-url", help="kafka://host:port [env SALESPULSE_KAFKA_URL]")
def replay(
    file: Path, fmt: str, maps: tuple[str, ...], sets: tuple[str, ...], rate: float | None,
    position_file: Path | None, restart: bool, strict: bool, kafka_url: str | None,
) -> None:
    """Backfill history from FILE (JSON Lines of canonical events, or CSV with --map) into salespulse.events.

    Replayed events are measured like any other but never raise an SLA alert; the worker's event_id dedup
    makes a replay safe to repeat. Progress is saved to the position file, so a stopped replay resumes where
    it was. Bad rows are reported with their line and field and skipped (exit status 1), or stop the run
    with --strict. Example:

    \b
      salespulse replay calls.csv --set type=call.logged --map event_id=Id \\
        --map occurred_at=Date --map lead_id=Lead --map rep_id=Owner --map outcome=Result --rate 500
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from salespulse.kafka_connection import KafkaConnection
    from salespulse.replay import ReplayError, read_csv, read_jsonl, replay as run_replay

    settings = _settings(kafka_url=kafka_url)
    if settings.kafka_url is None:
        console.print("[red]error:[/red] SALESPULSE_KAFKA_URL (or --kafka-url) is required for replay")
        raise SystemExit(2)
    is_csv = fmt == "csv" or (fmt == "auto" and file.suffix.lower() == ".csv")
    columns, constants = _pairs(maps, "--map"), _pairs(sets, "--set")
    if is_csv and not columns:
        raise click.BadParameter("CSV needs a column mapping: --map FIELD=COLUMN (repeat)", param_hint="--map")
    position = position_file or file.with_name(file.name + ".position")
    if restart:
        position.unlink(missing_ok=True)
    with file.open("rb") as fh:
        total = sum(1 for _ in fh)
    rows = read_csv(file, columns, constants) if is_csv else read_jsonl(file)
    with Progress(TextColumn("[bold]replay[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(file.name, total=total)
        try:
            stats = asyncio.run(
                run_replay(rows, KafkaConnection.from_settings(settings), position, rate=rate, strict=strict,
                           on_progress=lambda line: progress.update(task, completed=line),
                           connect_timeout_s=settings.startup_timeout_s)
            )
        except ReplayError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise SystemExit(1) from None
        progress.update(task, completed=total)
    for bad in stats.bad:
        console.print(f"[yellow]skipped[/yellow] {bad}")
    resumed = f", {stats.skipped_before} already replayed before" if stats.skipped_before else ""
    console.print(f"replayed {stats.sent} events from {file}{resumed}; {len(stats.bad)} bad rows skipped; "
                  f"position saved in {position}")
    if stats.bad:
        raise SystemExit(1)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("schemas"), show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the files on disk differ from the models (CI).")
def schemas(out: Path, check: bool) -> None:
    """Export the JSON Schemas of the canonical events and the metric records."""
    from salespulse.models.schema_export import export_schemas, stale_schemas

    if check:
        stale = stale_schemas(out)
        for path in stale:
            console.print(f"[red]stale:[/red] {path}")
        if stale:
            console.print("run `salespulse schemas` and commit the result")
            sys.exit(1)
        console.print("schemas are up to date")
        return
    for path in export_schemas(out):
        console.print(f"wrote {path}")


@main.group()
def crm() -> None:
    """Connecting a CRM (docs/crm.md)."""


@crm.command("check")
@click.argument("name", type=click.Choice(["hubspot", "pipedrive", "salesforce", "close"]))
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the [crm.<name>] mapping to this file (include it in your SALESPULSE_CONFIG).")
def crm_check(name: str, write_to: Path | None) -> None:
    """Check NAME's credentials, list the pipelines, stages and owners its API shows, print the mapping.

    Credentials come from the environment: SALESPULSE_HUBSPOT_ACCESS_TOKEN (HubSpot),
    SALESPULSE_PIPEDRIVE_API_TOKEN, SALESPULSE_SALESFORCE_INSTANCE_URL and SALESPULSE_SALESFORCE_ACCESS_TOKEN,
    SALESPULSE_CLOSE_API_KEY. Exit status 1 when the CRM cannot be read, 2 for a missing setting.
    """
    from salespulse.crm_check import DISCOVER, CheckFailed, render_mapping

    settings = _settings()
    try:
        found = DISCOVER[name](settings)
    except CheckFailed as exc:
        console.print(f"[red]✗ {name}:[/red] {exc}")
        raise SystemExit(2 if "is not set" in str(exc) else 1) from None
    console.print(f"[green]✓ {name}:[/green] credentials accepted")
    console.print(f"  pipelines: {len(found.pipelines) or '-'}; stages: {len(found.stages)}; owners: {len(found.owners)}")
    for stage_id, stage in found.stages.items():
        flags = " won" if stage.won else (" lost" if stage.closed else "")
        console.print(f"  {stage.pipeline} / {stage.order if stage.order is not None else '?'}. {stage.stage}"
                      f" ({stage_id}){flags}")
    for note in found.notes:
        console.print(f"[yellow]![/yellow] {note}")
    text = render_mapping(name, found)
    click.echo(text, nl=False)
    if write_to is not None:
        try:
            write_to.write_text(text, encoding="utf-8")
        except OSError as exc:
            console.print(f"[red]cannot write {write_to}:[/red] {exc.strerror or exc}")
            raise SystemExit(1) from None
        console.print(f"wrote {write_to}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
