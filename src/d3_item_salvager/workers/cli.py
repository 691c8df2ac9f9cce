"""Command line: `d3-item-salvager-workers COMMAND`, or `python -m d3_item_salvager.workers COMMAND`.

Exit codes: 0 success, 1 the job failed (or the scheduler had to stop), 2 bad usage or
configuration, 3 `run JOB` refused because another process is running that job now, 130 `run JOB`
stopped by SIGINT or SIGTERM (the run is recorded `cancelled`).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from d3_item_salvager.cli_options import ConfigOption, add_root_options, usage_error
from d3_item_salvager.errors import (
    ConfigError,
    IndexDatabaseError,
    IndexLockedError,
    JobRunningElsewhereError,
)
from d3_item_salvager.logging_setup import configure_app_logging, get_logger
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.jobs import JobSpec

if TYPE_CHECKING:
    from d3_item_salvager.config import AppConfig
    from d3_item_salvager.workers.runs import RunResult

# The runtime, the tasks and status pull in SQLAlchemy, httpx and APScheduler: each command imports
# them when it runs, so `--help` and usage errors answer at once. So does the config (pydantic).
# Help is click's plain formatting: Typer's rich formatting alone costs ~150 ms per start.

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
HISTORY_LIMIT = 20  # runs `history` lists unless --limit says otherwise

SCRIPT_NAME = "d3-item-salvager-workers"  # the console script; `__main__` names itself instead

# add_completion: Typer's --install-completion / --show-completion for the console script.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
_log = get_logger(__name__)


def _job_argument(name: str) -> JobSpec:
    try:
        return BUILTIN_JOBS.get(name)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


add_root_options(
    app,
    SCRIPT_NAME,
    "Background jobs that keep the d3-item-salvager index of Maxroll build guides fresh.",
)


def _fail(message: str) -> typer.Exit:
    return usage_error(message)


def _setup(
    config_file: Path | None, needs_token: tuple[str, ...] = (), *, start_logging: bool = True
) -> AppConfig:
    """Load and check the config and start logging; exit 2 with one clear message on error.

    `needs_token`: job ids that need the Maxroll search token when enabled. `start_logging=False`
    for read-only commands, which must create no log file.
    """
    from d3_item_salvager.config import load_config

    try:
        config = load_config(config_file)
        BUILTIN_JOBS.check_config(config)
        for job_id in needs_token:
            spec = BUILTIN_JOBS.get(job_id)
            if spec.needs_token and spec.settings(config).enabled:
                config.maxroll.require_bearer_token()
        if start_logging:
            configure_app_logging(config, capture_apscheduler=True)  # our own process
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return config


def _run_async(main: Any) -> Any:
    import asyncio  # with its ssl import, ~15 % of a `--help`: only commands that run need it

    try:
        return asyncio.run(main)
    except IndexLockedError as exc:  # busy, not misconfigured: a failure worth retrying
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except (ConfigError, IndexDatabaseError) as exc:
        raise _fail(str(exc)) from None


@app.command("run-scheduler")
def run_scheduler(config_file: ConfigOption = None) -> None:
    """Run the scheduler until SIGINT or SIGTERM, then stop gracefully."""
    config = _setup(config_file, tuple(BUILTIN_JOBS.ids))
    import asyncio

    from d3_item_salvager.workers.leadership import FatalLeadershipError
    from d3_item_salvager.workers.runtime import WorkerRuntime
    from d3_item_salvager.workers.startup import limit_malloc_arenas

    limit_malloc_arenas()  # our own process: before any worker thread allocates (see there)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # This process is ours alone, so freezing the start-up objects out of the collector's
        # reach (shorter full collections during runs) harms nobody.
        async with WorkerRuntime(config, freeze_gc=True) as runtime:
            _log.info("scheduler started; SIGINT or SIGTERM stops it")
            failed = loop.create_task(runtime.wait_stopped())
            stopping = loop.create_task(stop.wait())
            await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if failed.done():
                failed.exception()  # leaving the runtime raises it; retrieved here, not twice
            else:
                failed.cancel()
                _log.info("stop requested")

    try:
        _run_async(serve())
    except FatalLeadershipError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


async def _run_once(
    config: AppConfig, job_id: str, options: dict[str, Any]
) -> RunResult | JobRunningElsewhereError:
    """One manual run in a runtime of its own; SIGINT or SIGTERM cancels it (recorded so)."""
    import asyncio

    from d3_item_salvager.workers.runtime import WorkerRuntime

    loop = asyncio.get_running_loop()
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        task = loop.create_task(runtime.run_job(job_id, **options))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except JobRunningElsewhereError as exc:  # the claim is atomic: no run twice
            return exc
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            [*_, result] = runtime.tracker.runs(job_id)
            return result
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


@app.command("run")
def run_job(
    job: Annotated[
        str,
        typer.Argument(
            help="The job to run once, now: "
            + ", ".join(spec.cli_name for spec in BUILTIN_JOBS)
            + " (underscores work too).",
            metavar="JOB",
        ),
    ],
    force_refresh: Annotated[
        bool,
        typer.Option(
            "--force-refresh", help="scrape-guides: refetch every document, the item catalog too."
        ),
    ] = False,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Run one job now (recorded as a manual run) and print its summary.

    Refused (exit 3) while another process runs the same job; SIGINT or SIGTERM cancels the run
    (recorded `cancelled`, exit 130).
    """
    spec = _job_argument(job)
    config = _setup(config_file, (spec.id,))
    options = {"force_refresh": force_refresh} if spec.id == "scrape_guides" else {}
    result = _run_async(_run_once(config, spec.id, options))
    if isinstance(result, JobRunningElsewhereError):
        typer.echo(
            f"refused: {spec.cli_name} is running now in {result.holder}; try again later",
            err=True,
        )
        raise typer.Exit(EXIT_REFUSED)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str))
    else:
        typer.echo(_run_summary(spec.cli_name, result))
    if result.outcome == "cancelled":
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.succeeded else EXIT_FAILED)


@app.command("status")
def status(
    as_json: JsonOption = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Health check: exit 1 with one line per problem when no live process holds the "
            "scheduler lease, or an enabled job's last run failed or it is overdue by more than "
            "health.overdue_margin_minutes.",
        ),
    ] = False,
    config_file: ConfigOption = None,
) -> None:
    """Show every job: enabled, trigger, next run, last outcome, duration and problems, lease holder.

    Read-only: it creates no file and changes nothing (exit 2 when there is no job store).
    """
    config = _setup(config_file, start_logging=False)
    from d3_item_salvager.workers.status import (
        collect_status,
        health_problems,
        paused_notes,
        render_status,
    )

    try:
        report = collect_status(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not check:
        typer.echo(
            json.dumps(report, default=str)
            if as_json
            else render_status(report, config.scheduler.timezone)
        )
        return
    problems = health_problems(report, config.health.overdue_margin_minutes)
    paused = paused_notes(report)
    if as_json:
        typer.echo(json.dumps({"healthy": not problems, "problems": problems, "paused": paused}))
    elif problems:
        typer.echo("\n".join(problems + paused))
    else:
        enabled = sum(job["enabled"] for job in report["jobs"]) - len(paused)
        typer.echo("\n".join([f"ok: {enabled} enabled job(s) healthy", *paused]))
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)


JobToPause = Annotated[
    str, typer.Argument(help="The job, by CLI name or id (see `run --help`).", metavar="JOB")
]


@app.command("pause")
def pause(job: JobToPause, config_file: ConfigOption = None) -> None:
    """Stop running a job on schedule until `resume`; `run JOB` still runs it by hand.

    Kept in the job store: it holds across restarts, and a running scheduler (in any process)
    honours it within one lease period (scheduler.lease_seconds).
    """
    _set_paused(job, config_file, paused=True)


@app.command("resume")
def resume(job: JobToPause, config_file: ConfigOption = None) -> None:
    """Run a paused job on schedule again: once at once if a run fell due while it was paused
    (never once per missed run), else at its next fire time."""
    _set_paused(job, config_file, paused=False)


def _set_paused(job: str, config_file: Path | None, *, paused: bool) -> None:
    spec = _job_argument(job)
    config = _setup(config_file, start_logging=False)
    from contextlib import asynccontextmanager

    from d3_item_salvager.workers.job_store import job_store_engine_resource, set_paused

    async def write() -> bool:
        open_store = asynccontextmanager(job_store_engine_resource)
        settings = config.scheduler
        async with open_store(settings, config.database.busy_timeout_seconds) as engine:
            return await set_paused(engine, spec.id, paused)

    changed = _run_async(write())
    lease = f"{config.scheduler.lease_seconds:g}s"
    if paused:
        typer.echo(
            f"{spec.cli_name}: paused; a running scheduler stops running it on schedule within "
            f"{lease}"
            if changed
            else f"{spec.cli_name}: already paused"
        )
    else:
        typer.echo(
            f"{spec.cli_name}: resumed; a running scheduler runs it on schedule again within {lease}"
            if changed
            else f"{spec.cli_name}: was not paused"
        )


@app.command("history")
def history(
    job: Annotated[
        str | None, typer.Option("--job", help="Only this job's runs.", metavar="JOB")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many runs.", metavar="N")
    ] = HISTORY_LIMIT,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """List recent runs, newest first: trigger, due time, start, duration, outcome, problems, error.

    Read-only, like `status`.
    """
    spec = _job_argument(job) if job is not None else None
    config = _setup(config_file, start_logging=False)
    from d3_item_salvager.workers.status import collect_history, render_history

    try:
        runs = collect_history(config, spec.id if spec is not None else None, limit)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        json.dumps({"runs": runs}, default=str)
        if as_json
        else render_history(runs, config.scheduler.timezone)
    )


def _run_summary(name: str, result: Any) -> str:
    """`run JOB` for people: the outcome, its figures, then every problem on a line of its own."""
    from d3_item_salvager.workers.status import format_duration

    lines = [f"{name}: {result.outcome} in {format_duration(result.duration_seconds)}"]
    if result.error:
        lines.append(f"  error: {result.error}")
    listed = []
    for key, value in (result.summary or {}).items():
        if isinstance(value, list):
            if value:
                listed.append((key, value))
        else:
            lines.append(f"  {key}: {value}")
    for key, values in listed:
        lines.append(f"  {key} ({len(values)}):")
        lines.extend(f"    - {_problem_line(value)}" for value in values)
    return "\n".join(lines)


def _problem_line(value: Any) -> str:
    """A failure or warning of a summary (a dict with a place and an error) on one line."""
    if not isinstance(value, dict):
        return str(value)
    place = value.get("url") or value.get("where") or ""
    text = f"{place}: {value.get('error', '')}" if place else str(value.get("error", value))
    return text + (" (transient)" if value.get("transient") else "")


def main(prog_name: str = SCRIPT_NAME) -> None:
    """Console entry point; help and usage lines name the command as `prog_name`."""
    app(prog_name=prog_name)
