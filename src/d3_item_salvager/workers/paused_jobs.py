"""Paused jobs: how the scheduler leader honours the `paused_jobs` table (job_store.py).

`pause JOB` and `resume JOB` (or `WorkerRuntime.pause_job` / `resume_job`) only write this table,
so a pause holds across restarts and reaches a scheduler running in another process. The process
leading the scheduler applies the table with APScheduler's public API when it registers the jobs
and in every lease round after (a lease period / 4): pausing clears the job's next run time
(`scheduler.pause_job`), and the time it cleared is kept here (`held_next_run_time`, written first,
so a paused job always has it). Resuming sets that time back (`modify_job(next_run_time=...)`), or
now when it passed during the pause: the job runs once at once, never once per fire time it
missed. A paused job's pending retry run is dropped; a manual run is not affected.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers.job_store import (
    PauseState,
    hold_next_run_time,
    in_thread,
    read_pause_states,
)
from d3_item_salvager.workers.jobs import retry_job_id

_log = get_logger(__name__)


def apply_pause_states(
    scheduler: BaseScheduler,
    engine: Engine,
    states: dict[str, PauseState],
    now: datetime | None = None,
) -> list[str]:
    """Pause and resume the scheduler's jobs as the table says; one line per change.

    Only a job whose state differs is touched, so applying twice changes nothing.
    """
    now = now or datetime.now(UTC)
    changes = []
    for job_id, state in states.items():
        job = scheduler.get_job(job_id)
        if job is None:  # disabled, or not a job of this configuration
            continue
        if state.paused and job.next_run_time is not None:
            if not hold_next_run_time(engine, job_id, job.next_run_time):
                continue  # resumed since we read the table: the next round sees it
            scheduler.pause_job(job_id)
            changes.append(f"{job_id}: paused (was due at {job.next_run_time.isoformat()})")
            if scheduler.get_job(retry_job_id(job_id)) is not None:
                scheduler.remove_job(retry_job_id(job_id))
                changes.append(f"{job_id}: pending retry run dropped (paused)")
        elif not state.paused and job.next_run_time is None:
            # Due during the pause: once, at once. Never held by us: its next fire time from now.
            held = state.held_next_run_time
            when = max(held, now) if held else job.trigger.get_next_fire_time(None, now)
            scheduler.modify_job(job_id, next_run_time=when)
            hold_next_run_time(engine, job_id, None)
            changes.append(f"{job_id}: resumed, next run at {when.isoformat()}")
    return changes


def keep_paused(scheduler: BaseScheduler, engine: Engine) -> list[str]:
    """Read the table and apply it now (blocking, as APScheduler's own job store calls are);
    returns the ids of the stored jobs that are paused."""
    with engine.connect() as connection:
        states = read_pause_states(connection)
    _log_changes(apply_pause_states(scheduler, engine, states))
    return sorted(
        job_id
        for job_id, state in states.items()
        if state.paused and scheduler.get_job(job_id) is not None
    )


def _log_changes(changes: list[str]) -> None:
    for change in changes:
        _log.info("paused jobs: %s", change)


class PausedJobsKeeper:
    """A leader's side of the table: applies it when it changed since the last look."""

    def __init__(self, scheduler: BaseScheduler, engine: Engine) -> None:
        self._scheduler = scheduler
        self._engine = engine
        self._seen: dict[str, bool] | None = None  # job id -> paused, as last applied

    def forget(self) -> None:
        """Apply the table at the next check whatever it says (a new term as leader)."""
        self._seen = None

    async def check(self) -> list[str]:
        """Read the table (in a thread); apply it when a job was paused or resumed since."""
        states = await in_thread(self._engine, read_pause_states)
        if not self._scheduler.running:  # shut down on the way out meanwhile
            return []
        wanted = {job_id: state.paused for job_id, state in states.items()}
        if wanted == self._seen:
            return []
        changes = apply_pause_states(self._scheduler, self._engine, states)
        _log_changes(changes)
        self._seen = wanted
        return changes
