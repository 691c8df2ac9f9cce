"""What `status` reports: each job's schedule and last run, and who holds the lease."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.workers.container import open_worker_container
from d3_item_salvager.workers.jobs import all_job_settings, retry_job_id
from d3_item_salvager.workers.lease import SchedulerLease
from d3_item_salvager.workers.run_history import RunHistory
from d3_item_salvager.workers.scheduler import build_scheduler


def _stored_jobs(config: AppConfig) -> dict[str, dict[str, Any]]:
    """Job id -> trigger and next run time, read straight from the job store (blocking)."""
    scheduler = build_scheduler(config)
    store: SQLAlchemyJobStore = scheduler._jobstores["default"]
    store.start(scheduler, "default")
    try:
        return {
            job.id: {
                "trigger": str(job.trigger),
                "next_run_time": job.next_run_time.astimezone(UTC).isoformat()
                if job.next_run_time
                else None,
            }
            for job in store.get_all_jobs()
        }
    finally:
        store.shutdown()


async def collect_status(config: AppConfig) -> dict[str, Any]:
    """Every configured job with its stored schedule and last finished run, plus the lease."""
    stored = await anyio.to_thread.run_sync(_stored_jobs, config)
    async with open_worker_container(config) as container:
        history: RunHistory = await resolve(container.run_history)
        latest = await history.latest_finished()
        lease = SchedulerLease(
            await resolve(container.job_store_engine), "status", config.scheduler.lease_seconds
        )
        holder = await lease.current()
    jobs = []
    for job_id, job in all_job_settings(config).items():
        last = latest.get(job_id)
        schedule = stored.get(job_id, {})
        jobs.append(
            {
                "job_id": job_id,
                "enabled": job.enabled,
                "trigger": schedule.get("trigger") or f"interval[{job.interval_minutes:g} min]",
                "next_run_time": schedule.get("next_run_time"),
                "retry_pending": retry_job_id(job_id) in stored,
                "last_outcome": last.outcome if last else None,
                "last_finished_at": last.finished_at if last else None,
                "last_duration_seconds": last.duration_seconds if last else None,
                "last_error": last.error if last else None,
            }
        )
    lease_report = None
    if holder is not None:
        lease_report = {
            "holder": holder.holder,
            "expires_at": datetime.fromtimestamp(holder.expires_at, UTC).isoformat(),
            "live": holder.expires_at > time.time(),
        }
    return {"jobs": jobs, "lease": lease_report}


def health_problems(
    report: dict[str, Any], margin_minutes: float, now: datetime | None = None
) -> list[str]:
    """One line per problem: an enabled job that is unscheduled, overdue, or whose last run failed."""
    now = now or datetime.now(UTC)
    margin = timedelta(minutes=margin_minutes)
    problems = []
    for job in report["jobs"]:
        if not job["enabled"]:
            continue
        job_id = job["job_id"]
        due = job["next_run_time"]
        if due is None:
            problems.append(f"{job_id}: not scheduled (no scheduler has registered it)")
        elif datetime.fromisoformat(due) < now - margin:
            problems.append(f"{job_id}: overdue, was due at {due}")
        outcome = job["last_outcome"]
        if outcome not in (None, "success", "skipped"):
            error = f": {job['last_error']}" if job["last_error"] else ""
            problems.append(f"{job_id}: last run {outcome}{error}")
    return problems


def render_status(report: dict[str, Any]) -> str:
    """A table for people."""
    lines = [f"{'job':<15} {'enabled':<8} {'trigger':<34} {'next run':<26} {'last':<10} duration"]
    for job in report["jobs"]:
        duration = job["last_duration_seconds"]
        lines.append(
            f"{job['job_id']:<15} {'yes' if job['enabled'] else 'no':<8} {job['trigger']:<34} "
            f"{job['next_run_time'] or '-':<26} {job['last_outcome'] or '-':<10} "
            f"{'-' if duration is None else f'{duration:.1f}s'}"
        )
        if job["last_error"]:
            lines.append(f"{'':<15} last error: {job['last_error']}")
    lease = report["lease"]
    if lease is None:
        lines.append("lease: nobody holds it (no scheduler running)")
    else:
        state = "live" if lease["live"] else "expired"
        lines.append(f"lease: {lease['holder']} ({state}, until {lease['expires_at']})")
    return "\n".join(lines)
