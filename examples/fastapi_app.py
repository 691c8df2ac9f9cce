"""A FastAPI app that embeds the workers: the README's lifespan, plus health, manual runs, metrics.

    pip install -e . fastapi uvicorn
    D3IS_MAXROLL__BEARER_TOKEN=... uvicorn examples.fastapi_app:app

It logs as the CLI does (`configure_app_logging`: the log file under `logging.dir`, every line with
its job and run id) and, like `run-scheduler`, refuses to start without the Maxroll bearer token
while a job that needs it is enabled.

- `GET /health`: the checks of `status --check`; 200 when healthy, 503 with the problems otherwise.
- `POST /jobs/{job}/runs`: starts a manual run in the background; 202 with its run id once it has
  started, 409 when another process (another worker of the server, say) runs that job now: the
  refused run is in the shared run history too (`skipped`, naming the holder).
- `GET /runs/{run_id}`: that run, running or finished (also runs the scheduler started).
- `GET /metrics/`: the runtime's Prometheus metrics. With several workers, start them with
  `PROMETHEUS_MULTIPROC_DIR` naming an empty folder (README, "Several processes, one view"):
  then every worker answers with the metrics of all of them, the leader's runs included.

      rm -rf /tmp/d3is-metrics && mkdir /tmp/d3is-metrics
      PROMETHEUS_MULTIPROC_DIR=/tmp/d3is-metrics uvicorn examples.fastapi_app:app --workers 2

`create_app(config)` builds the app for a given config (the tests pass one aimed at FakeMaxroll);
the module-level `app` reads the usual environment and config file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app

from d3_item_salvager.config import AppConfig, load_config
from d3_item_salvager.errors import ConfigError, JobRunningElsewhereError
from d3_item_salvager.logging_setup import app_logging
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.job_store import RunRow
from d3_item_salvager.workers.runs import RunEvent, RunResult, RunStarted
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import collect_status, health_problems


@dataclass
class _ManualRun:
    job_id: str
    result: RunResult | None = None
    crashed: str | None = None
    refused: JobRunningElsewhereError | None = None


class ManualRuns:
    """The manual runs this app started: a task group owns them, a dict remembers them."""

    def __init__(self, runtime: WorkerRuntime, group: TaskGroup) -> None:
        self._runtime = runtime
        self._group = group
        self._started: dict[str, _ManualRun] = {}

    async def start(self, job_id: str) -> str:
        """Start a run of `job_id` in the background; return its run id once its work started,
        or once it was refused (see `refusal`)."""
        run_id = uuid.uuid4().hex[:12]
        run = self._started[run_id] = _ManualRun(job_id)
        started = anyio.Event()

        def on_event(event: RunEvent) -> None:
            if isinstance(event, RunStarted) and event.run_id == run_id:
                started.set()

        async def execute() -> None:
            try:
                run.result = await self._runtime.run_job(job_id, run_id=run_id)
            except JobRunningElsewhereError as exc:
                run.refused = exc
            except Exception as exc:  # noqa: BLE001 - reported by GET /runs/{id}; the app serves on
                run.crashed = f"{type(exc).__name__}: {exc}"
            finally:
                started.set()  # ended before or without starting: the answer is known

        unsubscribe = self._runtime.runner.events.subscribe(on_event)
        try:
            self._group.start_soon(execute)
            await started.wait()
        finally:
            unsubscribe()
        return run_id

    def refusal(self, run_id: str) -> JobRunningElsewhereError | None:
        """Why a run this app started was refused (another process runs its job), if it was."""
        started = self._started.get(run_id)
        return started.refused if started is not None else None

    async def describe(self, run_id: str) -> dict[str, Any] | None:
        """The run as JSON: as its task returned it, else as the run history has it."""
        started = self._started.get(run_id)
        if started is not None and started.result is not None:
            return {"state": "finished", **started.result.to_dict()}
        if started is not None and started.crashed is not None:
            return {"state": "crashed", "run_id": run_id, "error": started.crashed}
        # Runs the scheduler started, and ours between their end and their task's return.
        for row in await self._runtime.runner.history.runs():
            if row.run_id == run_id:
                state = "running" if row.finished_at is None else "finished"
                return {"state": state, **_row_json(row)}
        if started is not None:  # not even started yet
            return {"state": "running", "run_id": run_id, "job_id": started.job_id}
        return None


def _row_json(row: RunRow) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "job_id": row.job_id,
        "trigger": row.trigger,
        "outcome": row.outcome,
        "error": row.error,
        "duration_seconds": row.duration_seconds,
        "attempt": row.attempt,
        "summary": row.summary,
    }


def create_app(config: AppConfig | None = None) -> FastAPI:
    """The app; `config` defaults to `load_config()` (environment and config file), read at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = config or load_config()
        # As `run-scheduler` does: no start without the token a scheduled sync would need.
        if any(spec.needs_token and spec.settings(settings).enabled for spec in BUILTIN_JOBS):
            settings.maxroll.require_bearer_token()
        # Our logs to the log file and stderr as the CLI writes them, for the app's lifetime.
        with app_logging(settings):
            async with (
                WorkerRuntime(settings) as runtime,
                anyio.create_task_group() as group,
            ):
                app.state.workers = runtime
                app.state.runs = ManualRuns(runtime, group)
                assert runtime.metrics is not None
                # In multiprocess mode this registry reads every worker's files (README, "Metrics").
                app.mount("/metrics", make_asgi_app(registry=runtime.metrics.registry))
                yield
                # Runs still going are cancelled (and recorded so) before the runtime closes.
                group.cancel_scope.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        runtime: WorkerRuntime = request.app.state.workers
        # status reads the job store with blocking calls: off the loop.
        report = await anyio.to_thread.run_sync(collect_status, runtime.config, runtime.jobs)
        problems = health_problems(report, runtime.config.health.overdue_margin_minutes)
        body = {"healthy": not problems, "problems": problems}
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.post("/jobs/{job}/runs", status_code=202)
    async def start_run(job: str, request: Request) -> dict[str, str]:
        try:
            job_id = request.app.state.workers.jobs.get(job).id  # scrape_guides or scrape-guides
        except ConfigError as exc:
            raise HTTPException(404, str(exc)) from None
        runs: ManualRuns = request.app.state.runs
        run_id = await runs.start(job_id)
        answer = {"run_id": run_id, "job_id": job_id, "url": f"/runs/{run_id}"}
        refusal = runs.refusal(run_id)
        if refusal is not None:  # the run is in the shared history as `skipped`
            raise HTTPException(409, {**answer, "error": f"refused: {refusal}"})
        return answer

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        described = await request.app.state.runs.describe(run_id)
        if described is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return dict(described)

    return app


app = create_app()
