"""The job store's own tables (job_store.py) on real SQLite files and PostgreSQL: job claims taken
atomically, the lease's rules, one time format (an old store migrated once, read before that), and
two write transactions per run."""

from __future__ import annotations

import ast
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, inspect, text, update

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers import JobContext, JobFailedError, JobSpec, WorkerRuntime
from d3_item_salvager.workers.container import open_worker_container
from d3_item_salvager.workers.job_store import (
    RunHistory,
    SchedulerLease,
    engine_options,
    install_connection_settings,
    job_claims,
    job_store_engine_resource,
    metadata,
    scheduler_lease,
    worker_identity,
)
from d3_item_salvager.workers.status import collect_history, collect_status
from tests.conftest import make_config, only_jobs
from tests.postgres_server import PostgresDatabase

ROUNDS = 40
SOURCE = Path(__file__).resolve().parents[2] / "src" / "d3_item_salvager" / "workers"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        database: PostgresDatabase = request.getfixturevalue("postgres")
        return database.psycopg_url
    return f"sqlite:///{tmp_path / 'jobs.sqlite'}"


def open_engine(url: str) -> Engine:
    engine = create_engine(url, **engine_options(url, 30))
    install_connection_settings(engine, 30)
    return engine


@pytest.fixture
def engines(store_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines (two processes' connection pools) on one job store."""
    made = [open_engine(store_url) for _ in range(2)]
    metadata.create_all(made[0])
    try:
        yield made[0], made[1]
    finally:
        for engine in made:
            engine.dispose()


# Job claims


async def test_two_runs_racing_never_both_begin(engines: tuple[Engine, Engine]) -> None:
    """Many rounds of two stores beginning a run of one job at once, each in its own thread and
    transaction: each round exactly one begins, the other is told who holds the job; the same
    for a stale claim taken over."""
    histories = [RunHistory(engine, worker_identity(f"n{i}")) for i, engine in enumerate(engines)]

    async def race(job_id: str, round_: int) -> list[Any]:
        return list(
            await asyncio.gather(
                *(h.begin(f"{job_id}-{h.worker}", job_id, "manual", None, 0, 60) for h in histories)
            )
        )

    for round_ in range(ROUNDS):
        results = await race(f"fresh-{round_}", round_)
        assert sorted(result is None for result in results) == [False, True], results
        [winner] = [h.worker for h, r in zip(histories, results, strict=True) if r is None]
        [refusal] = [r for r in results if r is not None]
        assert refusal.holder == winner

    # Stale claims (their holder's claim expired) are taken over by exactly one racer too.
    with engines[0].begin() as connection:
        connection.execute(
            job_claims.insert(),
            [
                {
                    "job_id": f"stale-{round_}", "holder": "otherhost:1:gone", "run_id": "old",
                    "trigger": "scheduled", "claimed_at": time.time() - 1000,
                    "expires_at": time.time() - 500,
                }
                for round_ in range(ROUNDS)
            ],
        )  # fmt: skip
    for round_ in range(ROUNDS):
        results = await race(f"stale-{round_}", round_)
        assert sorted(result is None for result in results) == [False, True], results


async def test_stale_claims_are_taken_over_and_live_ones_are_not(tmp_path: Path) -> None:
    """A claim of a dead process on this host and an expired one are stale; a live one (on
    another host, or this process's own) holds until it expires; release frees at once."""
    engine = open_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    metadata.create_all(engine)
    mine = RunHistory(engine, worker_identity("mine"), clock=lambda: 1000.0)
    try:
        dead = worker_identity("x").split(":")[0] + ":999999999:dead"  # no such pid
        cases = [
            (dead, 5000.0, True),
            ("otherhost:1:late", 999.0, True),
            (mine.worker, 5000.0, False),
            ("otherhost:1:live", 5000.0, False),
        ]
        for number, (holder, expires, taken) in enumerate(cases):
            with engine.begin() as connection:
                connection.execute(job_claims.delete())
                connection.execute(
                    job_claims.insert().values(
                        job_id="j", holder=holder, run_id="r0", trigger="manual",
                        claimed_at=0.0, expires_at=expires,
                    )
                )  # fmt: skip
            held = await mine.begin(f"r{number}", "j", "manual", None, 0, 60)
            assert (held is None) == taken, holder
        held = await mine.begin("r-live", "j", "manual", None, 0, 60)
        assert held is not None
        assert held.holder == "otherhost:1:live"
        assert await mine.release("j", "r-live") is False  # never ours
        with engine.begin() as connection:
            connection.execute(job_claims.delete())
        assert await mine.begin("r-free", "j", "manual", None, 0, 60) is None
        assert await mine.end("r-free", "j", "success", None, None) is True
        assert await mine.claim("j") is None
    finally:
        engine.dispose()


# The scheduler lease


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_lease_is_exclusive_expires_and_is_taken_over(tmp_path: Path) -> None:
    """One holder at a time; renewals keep it; once expired a standby takes it; release frees it."""
    clock = Clock()
    async with open_worker_container(make_config(tmp_path)) as container:
        engine = await resolve(container.job_store_engine)
        first = SchedulerLease(engine, "first", 8, clock=clock)
        second = SchedulerLease(engine, "second", 8, clock=clock)
        assert (first.check_interval, await first.try_acquire()) == (2, True)
        assert await second.try_acquire() is False
        clock.now += 3
        assert await first.renew() is True  # held until 1003 + 4
        clock.now += 3.9
        assert await second.try_acquire() is False
        clock.now += 0.2  # first missed two renewals: its lease has expired
        assert await second.try_acquire() is True
        assert await first.renew() is False
        holder = await first.current()
        assert holder is not None
        assert (holder.holder, holder.expires_at) == ("second", clock.now + 4)
        await second.release()
        assert await first.current() is None
        assert await first.try_acquire() is True


async def test_lease_rules_hold_on_either_backend(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """One holder at a time, renewals keep it, an expired lease is taken over and its former
    holder cannot renew, and a released lease is free at once: on SQLite and on PostgreSQL."""
    config = make_config(tmp_path, scheduler=job_store_settings)
    async with open_worker_container(config) as container:
        engine = await resolve(container.job_store_engine)
        first = SchedulerLease(engine, "first", 8)
        second = SchedulerLease(engine, "second", 8)
        assert await first.try_acquire() is True
        assert await first.try_acquire() is True  # ours already: taking it again renews it
        assert await second.try_acquire() is False
        assert await first.renew() is True
        assert await second.renew() is False
        assert await second.try_acquire() is False
        with engine.begin() as connection:  # the holder stopped renewing long ago
            connection.execute(update(scheduler_lease).values(expires_at=0.0))
        assert await second.try_acquire() is True
        assert await first.renew() is False
        assert await first.try_acquire() is False
        holder = await first.current()
        assert holder is not None
        assert holder.holder == "second"
        await second.release()
        assert await second.current() is None
        assert await first.try_acquire() is True


# One time format: a store written before, with ISO 8601 text in job_runs


OLD_JOB_RUNS = """
CREATE TABLE job_runs (
    run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, trigger TEXT NOT NULL, scheduled_for TEXT,
    started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT, error TEXT, summary TEXT,
    attempt INTEGER NOT NULL, worker TEXT NOT NULL
)"""
OLD_ROWS = [
    # run_id, job_id, trigger, scheduled_for, started_at, finished_at, outcome, summary
    ("done", "scrape_guides", "scheduled", "2026-03-01T10:00:00+00:00",
     "2026-03-01T10:00:00.250000+00:00", "2026-03-01T10:00:02.750000+00:00", "success",
     '{"problems": 2}'),
    ("by-hand", "cleanup_logs", "manual", None, "2026-03-02T08:00:00+00:00",
     "2026-03-02T08:00:01+00:00", "failed", None),
    ("open", "refresh_cache", "scheduled", "2026-03-03T00:00:00+00:00",
     "2026-03-03T00:00:00.5+00:00", None, None, None),
]  # fmt: skip


def write_old_store(url: str) -> None:
    """A job store as the previous release left it: job_runs times as ISO 8601 text."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(OLD_JOB_RUNS))
            connection.execute(text("CREATE INDEX ix_job_runs_job_id ON job_runs (job_id)"))
            connection.execute(
                text(
                    "INSERT INTO job_runs VALUES (:run_id, :job_id, :trigger, :due, :started,"
                    " :finished, :outcome, NULL, :summary, 0, 'oldhost:1:abc')"
                ),
                [
                    dict(zip(("run_id", "job_id", "trigger", "due", "started", "finished",
                              "outcome", "summary"), row, strict=True))
                    for row in OLD_ROWS
                ],
            )  # fmt: skip
        # The other tables had today's shape already.
        metadata.create_all(
            engine, tables=[t for t in metadata.sorted_tables if t.name != "job_runs"]
        )
    finally:
        engine.dispose()


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso is not None else None


def store_config(tmp_path: Path, url: str) -> AppConfig:
    if url.startswith("sqlite"):
        return make_config(tmp_path, scheduler={"job_store_path": url.removeprefix("sqlite:///")})
    return make_config(tmp_path, scheduler={"job_store_url": url})


@asynccontextmanager
async def opened(config: AppConfig) -> AsyncIterator[Engine]:
    async with asynccontextmanager(job_store_engine_resource)(config.scheduler, 30) as engine:
        yield engine


async def open_and_close(config: AppConfig) -> None:
    async with opened(config):
        pass


def stored_rows(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = (
                "SELECT run_id, scheduled_for, started_at, finished_at, outcome, summary"
                " FROM job_runs ORDER BY run_id"
            )
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


async def test_an_old_store_is_read_as_it_is_then_migrated_once_by_two_openers(
    tmp_path: Path, store_url: str
) -> None:
    """`history` reads a store still holding ISO text; two processes opening it at once (both
    having found ISO text, then meeting at the lock) migrate it once, inside one transaction:
    every row kept, every time now epoch seconds, the index there, `history` unchanged."""
    write_old_store(store_url)
    config = store_config(tmp_path, store_url)
    untouched = stored_rows(store_url)
    before = collect_history(config, None, 10)
    status = {job["job_id"]: job for job in collect_status(config)["jobs"]}
    assert status["scrape_guides"]["last_finished_at"] == "2026-03-01T10:00:02.750000+00:00"
    assert status["scrape_guides"]["last_duration_seconds"] == 2.5
    assert stored_rows(store_url) == untouched  # read, never written
    assert [run["run_id"] for run in before] == ["open", "by-hand", "done"]
    done = before[2]
    assert (done["started_at"], done["duration_seconds"]) == (
        "2026-03-01T10:00:00.250000+00:00",
        2.5,
    )
    assert (done["scheduled_for"], done["problems"]) == ("2026-03-01T10:00:00+00:00", 2)
    assert before[0]["outcome"] == "running"

    # Both openers wait for each other just before taking the migration's lock.
    at_the_lock = threading.Barrier(2, timeout=30)
    statements: list[str] = []

    def before_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)
        if statement.startswith("BEGIN IMMEDIATE") or "pg_advisory_xact_lock" in statement:
            at_the_lock.wait()

    event.listen(Engine, "before_cursor_execute", before_execute)
    try:
        await asyncio.gather(open_and_close(config), open_and_close(config))
    finally:
        event.remove(Engine, "before_cursor_execute", before_execute)
    assert sum(s.startswith("ALTER TABLE job_runs RENAME") for s in statements) == 1

    expected = [
        (run_id, epoch(due), epoch(started), epoch(finished), outcome, summary)
        for run_id, _job, _trigger, due, started, finished, outcome, summary in OLD_ROWS
    ]
    assert stored_rows(store_url) == sorted(expected)
    engine = create_engine(store_url)
    try:
        with engine.connect() as connection:
            columns = {
                c["name"]: str(c["type"]) for c in inspect(connection).get_columns("job_runs")
            }
            indexes = [index["name"] for index in inspect(connection).get_indexes("job_runs")]
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert {columns[name] for name in ("scheduled_for", "started_at", "finished_at")} <= {
        "REAL", "FLOAT", "DOUBLE PRECISION", "DOUBLE_PRECISION"
    }  # fmt: skip
    assert indexes == ["ix_job_runs_job_id"]
    assert "job_runs_iso_times" not in tables
    assert collect_history(config, None, 10) == before

    # Opened again: nothing left to do, and the history it writes reads alike.
    statements.clear()
    async with opened(config) as engine:
        history = RunHistory(engine, worker_identity("new"))
        assert await history.begin("new", "scrape_guides", "manual", None, 0, 60) is None
        assert await history.end("new", "scrape_guides", "success", None, {"problems": 0}) is True
        runs = await history.runs()
    assert [run.run_id for run in runs] == ["done", "by-hand", "open", "new"]
    assert runs[0].started_at == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert runs[2].finished_at is None  # a run begun closes only its own job's open runs


async def test_a_failed_migration_leaves_the_old_store_as_it_was(tmp_path: Path) -> None:
    """A row whose time is not ISO 8601 stops the migration with the store unchanged (one
    transaction), and the runtime says which store it could not use."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    write_old_store(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE job_runs SET started_at = 'yesterday' WHERE run_id = 'open'")
            )
    finally:
        engine.dispose()
    before = stored_rows(url)
    with pytest.raises(ConfigError, match="run open: started_at 'yesterday' is not ISO 8601"):
        async with opened(store_config(tmp_path, url)):
            pass
    assert stored_rows(url) == before


# Two transactions per run, and one place that shields a write


async def ping(ctx: JobContext) -> dict[str, Any]:
    if ctx.options.get("fail"):
        raise JobFailedError("asked to fail")
    return {"pong": 1}


PING = JobSpec("ping", ping, interval_minutes=600, timeout_minutes=1)


@pytest.mark.parametrize("fail", [False, True])
async def test_a_run_is_two_write_transactions(
    tmp_path: Path, job_store_settings: dict[str, Any], fail: bool
) -> None:
    """A run that succeeds or fails writes the job store in exactly two transactions: begin
    (claim, start row) and end (outcome, claim given back)."""
    config = make_config(tmp_path, scheduler={**job_store_settings, "jobs": only_jobs()})
    writing: dict[int, bool] = {}
    committed: list[bool] = []

    def on_begin(connection: Any) -> None:
        writing[id(connection)] = False

    def on_execute(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            writing[id(connection)] = True

    def on_commit(connection: Any) -> None:
        committed.append(writing.pop(id(connection), False))

    async with WorkerRuntime(config, run_scheduler=False, extra_jobs=[PING]) as runtime:
        engine = await resolve(runtime.container.job_store_engine)
        listeners: list[tuple[str, Callable[..., None]]] = [
            ("begin", on_begin),
            ("before_cursor_execute", on_execute),
            ("commit", on_commit),
        ]
        for name, listener in listeners:
            event.listen(engine, name, listener)
        try:
            result = await runtime.run_job("ping", fail=fail)
        finally:
            for name, listener in listeners:
                event.remove(engine, name, listener)
        assert await runtime.runner.history.claim("ping") is None
    assert result.outcome == ("failed" if fail else "success")
    assert committed.count(True) == 2


def test_writes_are_shielded_in_one_place() -> None:
    """workers/ calls asyncio.shield once, in the runtime task group's `durable`: every write a
    cancel must not stop (a run's rows, a lease statement) goes through it."""
    shields = []
    for path in sorted(SOURCE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        shields += [
            f"{path.name}:{function.name}"
            for function in ast.walk(tree)
            if isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef)
            for node in ast.walk(function)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "asyncio.shield"
        ]
    assert shields == ["background.py:durable"]
