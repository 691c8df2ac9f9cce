"""Which lease term each scheduled run was submitted in, and whether it may start now.

Scheduled and retry runs belong to the lease holder. APScheduler submits a run, and the run
reaches the runner a little later; if the lease was lost in between (or lost and taken again),
the run must not start. Leadership says when this runtime leads (`lead`) and when not
(`stand_by`); each submission is stamped with the current term, which counts the times this
runtime began to lead. With no leadership at all (one-off use) every run may start.
"""

from __future__ import annotations

from collections import defaultdict, deque
from datetime import datetime

# A run that never reached the runner must not make its job's queue grow without end.
MAX_WAITING_PER_JOB = 10


class LeaseTerms:
    """Submissions per job (due time, lease term) and the runtime's current term."""

    def __init__(self) -> None:
        self._submitted: dict[str, deque[tuple[datetime, int | None]]] = defaultdict(deque)
        self._term: int | None = None  # None: no leadership here, runs always start
        self._leading = False
        self._standby_reason = ""

    def note_submitted(self, job_id: str, due: datetime) -> None:
        """A run of `job_id` due at `due` was submitted now, in the current term."""
        queue = self._submitted[job_id]
        queue.append((due, self._term))
        while len(queue) > MAX_WAITING_PER_JOB:
            queue.popleft()

    def pop_submitted(self, job_id: str) -> tuple[datetime | None, int | None]:
        """The due time and term of the oldest submission of `job_id` not yet started."""
        queue = self._submitted.get(job_id)
        return queue.popleft() if queue else (None, None)

    def lead(self) -> None:
        """This runtime holds the lease from now on: a new term begins."""
        self._term = (self._term or 0) + 1
        self._leading = True

    def stand_by(self, reason: str) -> None:
        """This runtime does not hold the lease (any more); runs refused from now say `reason`."""
        if self._term is None:
            self._term = 0
        self._leading = False
        self._standby_reason = reason

    def why_not_start(self, submitted_in: int | None) -> str | None:
        """Why a scheduled or retry run submitted in term `submitted_in` (None if unknown) must
        not start now, or None when it may: only while leading, in the term it was submitted."""
        if self._term is None:
            return None
        if not self._leading or (submitted_in is not None and submitted_in != self._term):
            return self._standby_reason
        return None
