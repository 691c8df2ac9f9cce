"""Leadership: which process schedules a job store's jobs, and what gaining or losing it does.

One mechanism per kind of store. A SQLite job store file is led by whoever holds the lock beside
it (leader_lock.py: the kernel lets it go when the holder dies; deleting or replacing the store
or the lock file ends that leader's leading for good). A job store on a server (PostgreSQL, or
any `scheduler.job_store_url`) is led by whoever holds its lease row (lease.py), renewed every
lease period / 4 for half a period, on the database server's clock.

The leader registers the jobs, resumes the scheduler and runs them; a standby keeps its scheduler
paused and competes every lease period / 4. Losing the lead (another process took the lease, our
renewal failed, the store was replaced) pauses the scheduler and cancels the scheduled runs still
going (recorded `cancelled`, "lease lost"), as well as runs submitted that have not started yet
(the runner records them so when they start, without running them), so two processes never run
the same job at once. An unexpected error while handling it is logged as an error and treated as
losing it: step down (also dropping pending retry runs) and keep competing; the loop itself never
dies.

A lease leader that could not renew in time (the database unreachable, or a renewal stuck) steps
down when the lease it last confirmed runs out by its own monotonic clock, measured from before
the statement that confirmed it, so never later than the expiry another host goes by.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import AppConfig
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers.background import BackgroundTasks
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.leader_lock import FatalLeadershipError
from d3_item_salvager.workers.paused_jobs import PausedJobsKeeper
from d3_item_salvager.workers.scheduler import (
    JobStoreScheduler,
    drop_retries,
    register_jobs,
)

_log = get_logger(__name__)

T = TypeVar("T")

LEASE_LOST = "lease lost"
NOT_LEADING = "not holding the scheduler lease"


class LeaderClaim(Protocol):
    """What leading takes: the lock beside a SQLite store file (leader_lock.LeaderLock) or a
    lease row (job_store.SchedulerLease)."""

    holder: str

    @property
    def check_interval(self) -> float:
        """How often the leader renews and a standby tries to take over."""

    @property
    def ttl(self) -> float | None:
        """How long one confirmation holds, or None: held until released."""

    async def try_acquire(self) -> bool:
        """Take it if free (or already ours); True when we hold it now."""

    async def renew(self) -> bool:
        """Still ours? False when lost; raises FatalLeadershipError when leading must stop."""

    async def release(self) -> None:
        """Give it up so a standby takes over at once."""

    def stepped_down(self) -> None:
        """We stopped leading: let go at once whatever needs no statement."""


class Leadership:
    """One process's side of leadership: compete, lead, step down.

    Args:
        lease: what leading takes: the lock beside a SQLite job store file (leader_lock.py), or
            a lease row (job_store.SchedulerLease).
        on_change: called with True on becoming leader and False on stepping down (metrics,
            the metrics server).
        resume: False to lead with the scheduler kept paused (burst mode).
        background: the runtime's task group: the leadership loop runs there, and so does
            every job-store statement (see `_statement`).
    """

    def __init__(
        self,
        lease: LeaderClaim,
        scheduler: JobStoreScheduler,
        runner: JobRunner,
        config: AppConfig,
        *,
        on_change: Callable[[bool], None] = lambda _leading: None,
        resume: bool = True,
        background: BackgroundTasks | None = None,
    ) -> None:
        self.lease = lease
        self.scheduler = scheduler
        self.runner = runner
        self.config = config
        self.is_leader = False
        self.became_leader = asyncio.Event()
        self.failed: BaseException | None = None
        self.stopped = asyncio.Event()
        self._on_change = on_change
        self._resume = resume  # False in burst mode: due jobs run only when asked
        self._background = background or BackgroundTasks()
        self._loop_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None  # steps down when the lease runs out
        self._round_lock = asyncio.Lock()  # one round at a time, whoever calls it
        # A take-over whose statement succeeded but that did not go on to lead (its round was
        # interrupted, by `stop` or an error), or a leader that stepped down after an error:
        # the lease may be ours though we do not lead.
        self._may_hold_lease = False
        self._paused_jobs = PausedJobsKeeper(scheduler, scheduler.job_store_engine)
        runner.stand_by(NOT_LEADING)  # scheduled runs start only once we lead

    async def start(self) -> None:
        """Take the lease at once when it is free, then keep competing in the background."""
        await self.round()
        self._loop_task = self._background.start_service(self._hold(), "d3is-lease")

    async def _hold(self) -> None:
        try:
            while True:
                await anyio.sleep(self.lease.check_interval)
                await self.round()
        except FatalLeadershipError as exc:  # the job store replaced: nothing to compete for
            self.failed = exc
            self.stopped.set()

    async def round(self) -> None:
        """One renewal (leader) or one attempt to take the lease (standby)."""
        async with self._round_lock:
            await self._round()

    async def _round(self) -> None:
        try:
            if self.is_leader:
                asked = asyncio.get_running_loop().time()
                if not await self._statement(self.lease.renew()):
                    self.step_down("lost the scheduler lease; standing by")
                elif self.is_leader:
                    self._held_until(asked)
                    await self._keep_paused()
            elif self.scheduler.running:
                # Only while the scheduler runs (paused, as a standby's does): once the runtime
                # has shut it down on its way out, leading would start it again, and nothing
                # would ever shut it down or close its job store's connections.
                asked = asyncio.get_running_loop().time()
                if await self._statement(self._take_over()):
                    await self._lead()
                    self._held_until(asked)
        except DBAPIError as exc:
            # A locked or busy job store: try again next round; the lease period absorbs it.
            _log.warning("lease check failed", extra={"error": str(exc.orig)})
        except FatalLeadershipError as exc:
            _log.error("%s", exc)
            self.step_down("stopped leading", drop_pending_retries=True)
            raise
        except Exception:  # noqa: BLE001 - a bug must not leave us leading without renewing
            _log.exception("lease handling failed; stepping down and competing again")
            if self.is_leader:
                # Nothing said the lease was lost: it may well still be ours (see `stop`).
                self._may_hold_lease = True
            self.step_down("stepped down after an error", drop_pending_retries=True)

    async def _take_over(self) -> bool:
        """Try to take the lease; note a success in the statement's own task, so it is seen even
        when the round that asked was cancelled meanwhile (see `stop`)."""
        taken = await self.lease.try_acquire()
        if taken:
            self._may_hold_lease = True
        return taken

    async def _statement(self, statement: Coroutine[Any, Any, T]) -> T:
        """Await one job-store statement as a durable write of the runtime's task group.

        The statement runs in a worker thread with a connection checked out, and cancelling its
        caller does not stop a thread: `stop` waits for it, or the runtime would dispose of the
        engine under that connection, which then stays open (a server session on PostgreSQL)
        until the garbage collector finds it.
        """
        return await self._background.durable(statement)

    def _held_until(self, asked: float) -> None:
        """The lease confirmed by a statement sent at `asked` (loop time) is ours for its ttl
        unless renewed: step down then. A lock (SQLite) has no ttl: it is ours until released.
        """
        if self.lease.ttl is None:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_at(asked + self.lease.ttl, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.is_leader:
            self.step_down("could not renew the scheduler lease before it ran out; standing by")

    async def _keep_paused(self) -> None:
        """Pause or resume the jobs an operator paused or resumed (paused_jobs.py) since."""
        await self._statement(self._paused_jobs.check())

    async def apply_paused_jobs(self) -> None:
        """Apply the paused-jobs table now rather than at the next round, when leading."""
        async with self._round_lock:
            if self.is_leader:
                await self._keep_paused()

    async def _lead(self) -> None:
        abandoned = await self._statement(self.runner.history.mark_abandoned())
        self._paused_jobs.forget()  # register_jobs applies the table; the next round checks it
        report = register_jobs(self.scheduler, self.config, self.runner.container)
        if self.config.scheduler.run_new_jobs_at_once:
            await self._retry_first_runs(report.unchanged + report.rescheduled)
        if self._resume:
            self.scheduler.resume()
        self._set(True)
        _log.info("holding the scheduler lease; running jobs", extra={"abandoned_runs": abandoned})

    async def _retry_first_runs(self, job_ids: list[str]) -> None:
        """A job that never succeeded (its first run was stopped or killed), or whose last run
        was abandoned (its process died mid-run), runs at once, not one whole interval later."""
        due_now = await self._statement(self.runner.history.jobs_to_run_at_once(job_ids))
        now = datetime.now(UTC)
        for job_id in job_ids:
            job = self.scheduler.get_job(job_id)
            # A paused job (no next run time) stays paused.
            if job_id in due_now and job is not None and job.next_run_time is not None:
                self.scheduler.modify_job(job_id, next_run_time=now)
                _log.info(
                    "no run of this job succeeded yet, or its last run was abandoned: running it "
                    "now",
                    extra={"job": job_id},
                )

    def step_down(self, message: str, *, drop_pending_retries: bool = False) -> None:
        """Stop acting as leader: pause, cancel scheduled runs, optionally drop pending retries."""
        was_leader = self.is_leader
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        with contextlib.suppress(Exception):
            self.scheduler.pause()
        if drop_pending_retries:
            with contextlib.suppress(Exception):  # the store may be what failed
                dropped = drop_retries(self.scheduler)
                if dropped:
                    _log.warning("pending retry runs dropped", extra={"jobs": dropped})
        cancelled = self.runner.stand_by(LEASE_LOST)  # also runs submitted, not started yet
        self._set(False)
        self.lease.stepped_down()  # after the runs are cancelled: the next leader may start
        if was_leader:
            _log.warning(message, extra={"cancelled_runs": cancelled})

    def _set(self, leading: bool) -> None:
        self.is_leader = leading
        if leading:
            self._may_hold_lease = False  # `stop` releases the lease through is_leader now
            self.runner.lead()
            self.became_leader.set()
        else:
            self.became_leader.clear()
        self._on_change(leading)

    async def stop(self) -> None:
        """Stop competing; release the lease when we hold it, so a standby takes over at once."""
        if self._loop_task is not None:
            await self._background.stop_service(self._loop_task)
        await self._background.settle()  # the statements of an interrupted round
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        # Also a take-over that succeeded without leading (its round interrupted by this stop,
        # or by an error), or a leader that stepped down after an error: the lease may be ours,
        # and a standby would wait a whole lease period for it. Only then: a standby that took
        # nothing writes nothing (on SQLite a write waits for the store's write lock). The
        # DELETE is conditional on the holder, so it is safe anyway.
        if self.is_leader or self._may_hold_lease:
            with contextlib.suppress(DBAPIError):
                await self.lease.release()
            self._may_hold_lease = False
        if self.is_leader:
            self._set(False)
        self.lease.stepped_down()


__all__ = ["FatalLeadershipError", "Leadership"]
