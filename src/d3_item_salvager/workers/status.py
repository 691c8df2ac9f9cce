"""What `status` and `history` report: each job's schedule and runs, and who holds the lease.

Both only read the job store (job_store.JobStoreReader): they create no file, folder or table.
APScheduler's jobs are read through its public job-store API (`SQLAlchemyJobStore.lookup_job` on
that read-only engine, never started, so it creates nothing either).
"""

from __future__ import annotations

import io
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from rich import box
from rich.console import Console
from rich.table import Table

from d3_item_salvager.config import AppConfig, JobConfig
from d3_item_salvager.crontab import cron_trigger, describe_cron
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.job_store import JobStoreReader, RunRow
from d3_item_salvager.workers.jobs import JobRegistry, retry_job_id
from d3_item_salvager.workers.leader_lock import probe_leader

# Outcomes that say the job itself went wrong; `cancelled` is a stop (graceful or the lease lost).
WIDTH = 100  # what the tables and notes fit

FAILED_OUTCOMES = ("failed", "timeout", "missed", "abandoned")


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


APSCHEDULER_JOBS_TABLE = "apscheduler_jobs"


def describe_interval(interval: timedelta) -> str:
    """`every 7 d`, `every 6 h`, `every 30 min`, `every 1.5 s`: the same text from the config or
    the store."""
    seconds = interval.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {seconds / size:g} {unit}"
    return f"every {seconds:g} s"


def describe_trigger(trigger: Any) -> str:
    """`every 6 h`, `cron 17 4 * * * (Europe/Berlin)`, with `, jitter 30 s` when it has one."""
    if isinstance(trigger, IntervalTrigger):
        text = describe_interval(trigger.interval)
    elif isinstance(trigger, CronTrigger):
        text = f"{describe_cron(trigger)} ({trigger.timezone})"
    else:
        return str(trigger)
    return f"{text}, jitter {trigger.jitter:g} s" if trigger.jitter else text


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job as APScheduler stored it."""

    job_id: str
    trigger: str
    next_run_time: datetime | None


def stored_jobs(store: JobStoreReader, job_ids: Iterable[str]) -> dict[str, StoredJob]:
    """The stored jobs of these scheduler ids, by id (none before a scheduler stored any)."""
    if APSCHEDULER_JOBS_TABLE not in store.tables:
        return {}
    jobs = SQLAlchemyJobStore(engine=store.engine, tablename=APSCHEDULER_JOBS_TABLE)
    found = {}
    with store.reading("the scheduled jobs"):
        for job_id in job_ids:
            job = jobs.lookup_job(job_id)
            if job is not None:
                found[job_id] = StoredJob(job_id, describe_trigger(job.trigger), job.next_run_time)
    return found


def _problems(run: RunRow | None) -> int | None:
    value = (run.summary or {}).get("problems") if run is not None else None
    return value if isinstance(value, int) else None


def collect_status(config: AppConfig, registry: JobRegistry = BUILTIN_JOBS) -> dict[str, Any]:
    """Every configured job with its stored schedule and last finished run, plus the lease.

    Raises:
        ConfigError: no job store at the configured place, or one that cannot be read.
    """
    configured = registry.settings(config)
    with JobStoreReader(config.scheduler, config.database.busy_timeout_seconds) as store:
        stored = stored_jobs(
            store, (job_id for base in configured for job_id in (base, retry_job_id(base)))
        )
        pauses = store.pause_states()
        leader = _leader_report(config, store)
        last_runs = {job_id: store.last_finished(job_id) for job_id in configured}
        verdicts = {
            job_id: store.last_finished(job_id, skip_cancelled=True) for job_id in configured
        }
    jobs = []
    for job_id, job in configured.items():
        last, verdict = last_runs[job_id], verdicts[job_id]
        schedule, retry = stored.get(job_id), stored.get(retry_job_id(job_id))
        pause = pauses.get(job_id)
        paused = pause is not None and pause.paused
        jobs.append(
            {
                "job_id": job_id,
                "enabled": job.enabled,
                "trigger": schedule.trigger if schedule else _configured_trigger(config, job),
                "cron": job.cron,
                "jitter_seconds": job.jitter_seconds,
                "paused": paused,
                "paused_since": _iso(pause.changed_at) if pause is not None and paused else None,
                "next_run_time": _iso(schedule.next_run_time) if schedule else None,
                "retry_pending": retry_job_id(job_id) in stored,
                "retry_at": _iso(retry.next_run_time) if retry is not None else None,
                "last_outcome": last.outcome if last else None,
                "last_finished_at": _iso(last.finished_at) if last else None,
                "last_duration_seconds": last.duration_seconds if last else None,
                "last_error": last.error if last else None,
                "last_problems": _problems(last),
                # The last run that ended on its own (not cancelled by a stop): what health judges.
                "conclusive_outcome": verdict.outcome if verdict else None,
                "conclusive_error": verdict.error if verdict else None,
            }
        )
    return {"jobs": jobs, "lease": leader}


def _leader_report(config: AppConfig, store: JobStoreReader) -> dict[str, Any] | None:
    """Who leads the job store and whether it still does: the lock beside a SQLite file (no
    expiry), else the lease row; None when nobody ever led it."""
    if config.scheduler.job_store_url is None:
        seen = probe_leader(config.scheduler.job_store_path)
        if seen is None:
            return None
        # Held by the kernel, and through a round within a lease period: a frozen leader still
        # holds the lock, but runs nothing.
        until = seen.renewed_at + config.scheduler.lease_seconds
        return {
            "holder": seen.holder,
            "expires_at": datetime.fromtimestamp(until, UTC).isoformat(),
            "live": seen.held and until > time.time(),
        }
    lease = store.lease()
    if lease is None:
        return None
    holder, live = lease
    expires_at = datetime.fromtimestamp(holder.expires_at, UTC).isoformat()
    return {"holder": holder.holder, "expires_at": expires_at, "live": live}


def _configured_trigger(config: AppConfig, job: JobConfig) -> str:
    """The schedule the configuration asks for, as `status` describes a stored one."""
    timezone = config.scheduler.timezone
    if job.cron is not None:
        return describe_trigger(cron_trigger(job.cron, timezone, job.jitter_seconds))
    text = describe_interval(timedelta(minutes=job.interval_minutes or 0))
    return f"{text}, jitter {job.jitter_seconds:g} s" if job.jitter_seconds else text


def collect_history(config: AppConfig, job_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` runs (of one job, or all), newest first."""
    with JobStoreReader(config.scheduler, config.database.busy_timeout_seconds) as store:
        runs = store.runs(job_id, limit)
    return [
        {
            "run_id": run.run_id,
            "job_id": run.job_id,
            "trigger": run.trigger,
            "scheduled_for": _iso(run.scheduled_for),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration_seconds": run.duration_seconds,
            "outcome": run.outcome or "running",
            "error": run.error,
            "problems": _problems(run),
            "worker": run.worker,
        }
        for run in runs
    ]


def health_problems(
    report: dict[str, Any], margin_minutes: float, now: datetime | None = None
) -> list[str]:
    """One line per problem; just one when no live process holds the lease (nobody runs jobs).

    Otherwise: an enabled job that is unscheduled, overdue, or whose last run that ended on its
    own failed (a run cancelled by a stop is no failure). A paused job is not judged: it is
    meant not to run (see `paused_notes`).
    """
    lease = report["lease"]
    if lease is None or not lease["live"]:
        return ["no scheduler is running: no live process holds the scheduler lease"]
    now = now or datetime.now(UTC)
    margin = timedelta(minutes=margin_minutes)
    problems = []
    for job in report["jobs"]:
        if not job["enabled"] or job.get("paused"):
            continue
        job_id = job["job_id"]
        due = job["next_run_time"]
        if due is None:
            problems.append(f"{job_id}: not scheduled (no scheduler has registered it)")
        elif datetime.fromisoformat(due) < now - margin:
            problems.append(f"{job_id}: overdue, was due at {due}")
        outcome = job["conclusive_outcome"]
        if outcome in FAILED_OUTCOMES:
            error = f": {job['conclusive_error']}" if job["conclusive_error"] else ""
            problems.append(f"{job_id}: last run {outcome}{error}")
    return problems


def paused_notes(report: dict[str, Any]) -> list[str]:
    """One line per enabled job that is paused, which the health check leaves out."""
    return [
        f"{job['job_id']}: paused since {job['paused_since']} (not checked; `resume` it)"
        for job in report["jobs"]
        if job["enabled"] and job.get("paused")
    ]


def _render(table: Table, after: list[str]) -> str:
    # As wide as the widest row (cells are short by design), so columns line up in a pipe; the
    # notes after it are wrapped to the width people read.
    out = io.StringIO()
    Console(file=out, width=10_000, color_system=None, highlight=False).print(table)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    notes = [
        wrapped
        for note in after
        for wrapped in textwrap.wrap(note, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    ]
    return "\n".join(lines + notes)


def format_duration(seconds: float | None) -> str:
    """`45 ms`, `1.2 s`, `3 min 5 s`, `2 h 10 min`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return _span(seconds)


def _span(seconds: float) -> str:
    """A whole span in its two largest units: `12 s`, `5 h 58 min`, `7 d 2 h`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if whole >= size or parts:
            amount, whole = divmod(whole, size)
            parts.append(f"{amount} {unit}")
    shown = [part for part in parts[:2] if not part.startswith("0 ")]
    return " ".join(shown or parts[:1])


def _parse(moment: str | datetime | None) -> datetime | None:
    if moment is None or isinstance(moment, datetime):
        return moment
    return datetime.fromisoformat(moment)


def _relative(moment: str | datetime | None, now: datetime) -> str:
    """`in 5 h 58 min`, `3 min ago`, `now`."""
    when = _parse(moment)
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {_span(seconds)}" if seconds > 0 else f"{_span(-seconds)} ago"


def _clock(moment: str | datetime | None, zone: ZoneInfo, now: datetime) -> str:
    """`14:03:27` today (in the configured timezone), `Jan 03 14:03` another day."""
    when = _parse(moment)
    if when is None:
        return "-"
    local = when.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_status(
    report: dict[str, Any], timezone: str = "UTC", now: datetime | None = None
) -> str:
    """A table for people, within 100 columns: times relative to now, errors below it."""
    now = now or datetime.now(UTC)
    zone = ZoneInfo(timezone)
    table = Table(box=box.ASCII2)
    for title in ("job", "schedule", "next run", "last run", "took", "probs"):
        table.add_column(title, no_wrap=True)
    notes = []
    for job in report["jobs"]:
        problems = job["last_problems"]
        # The configured timezone goes without saying, and jitter reads `~90 s`.
        schedule = job["trigger"].replace(f" ({timezone})", "").replace(", jitter ", " ~")
        if not job["enabled"]:
            upcoming = "disabled"
        elif job.get("paused"):
            upcoming = "paused"
        elif job.get("retry_at"):
            upcoming = f"retry {_relative(job['retry_at'], now)}"
        else:
            upcoming = _relative(job["next_run_time"], now)
        last = job["last_outcome"]
        table.add_row(
            job["job_id"],
            _cut(schedule, 24),
            upcoming,
            f"{last} {_relative(job['last_finished_at'], now)}" if last else "-",
            format_duration(job["last_duration_seconds"]),
            "-" if problems is None else str(problems),
        )
        if job["last_error"]:
            notes.append(f"{job['job_id']} last error: {job['last_error']}")
    lease = report["lease"]
    if lease is None:
        notes.append("lease: nobody holds it (no scheduler running)")
    else:
        state = "live" if lease["live"] else "not live"
        if lease["expires_at"] is not None:
            state += f", until {_clock(lease['expires_at'], zone, now)}"
        notes.append(f"lease: {lease['holder']} ({state})")
    return _render(table, notes)


def render_history(
    runs: list[dict[str, Any]], timezone: str = "UTC", now: datetime | None = None
) -> str:
    """A table of runs for people, newest first, within 100 columns (`--json` has it all)."""
    if not runs:
        return "no runs recorded"
    now = now or datetime.now(UTC)
    zone = ZoneInfo(timezone)
    table = Table(box=box.ASCII2)
    columns = ("job", "trigger", "due", "started", "took", "outcome", "problems", "error")
    for title in columns:
        table.add_column(title, no_wrap=True)
    for run in runs:
        problems = run["problems"]
        table.add_row(
            run["job_id"],
            run["trigger"],
            _clock(run["scheduled_for"], zone, now),
            _clock(run["started_at"], zone, now),
            format_duration(run["duration_seconds"]),
            run["outcome"],
            "-" if problems is None else str(problems),
            _cut(run["error"] or "", 12),
        )
    return _render(table, [])
