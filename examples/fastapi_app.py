"""A FastAPI app that embeds the workers: the README's lifespan, plus health, manual runs, metrics.

    pip install fastapi uvicorn
    D3IS_MAXROLL__BEARER_TOKEN=... uvicorn examples.fastapi_app:app

- `GET /health`: the checks of `status --check`; 200 when healthy, 503 with the problems otherwise.
- `POST /jobs/{job}/runs`: starts a manual run in the background; 202 with its run id at once.
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
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.run_history import RunRow
from d3_item_salvager.workers.runs import RunResult
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import collect_status, health_problems


@dataclass
class _ManualRun:
    job_id: str
    result: RunResult | None = None
    crashed: str | None = None


class ManualRuns:
    """The manual runs this app started: a task group owns them, a dict remembers them."""

    def __init__(self, runtime: WorkerRuntime, group: TaskGroup) -> None:
        self._runtime = runtime
        self._group = group
        self._started: dict[str, _ManualRun] = {}

    def start(self, job_id: str) -> str:
        """Start a run of `job_id` in the background and return its run id."""
        run_id = uuid.uuid4().hex[:12]
        run = self._started[run_id] = _ManualRun(job_id)

        async def execute() -> None:
            try:
                run.result = await self._runtime.run_job(job_id, run_id=run_id)
            except Exception as exc:  # noqa: BLE001 - reported by GET /runs/{id}; the app serves on
                run.crashed = f"{type(exc).__name__}: {exc}"

        self._group.start_soon(execute)
        return run_id

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
        async with (
            WorkerRuntime(config or load_config()) as runtime,
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
        run_id = request.app.state.runs.start(job_id)
        return {"run_id": run_id, "job_id": job_id, "url": f"/runs/{run_id}"}

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        described = await request.app.state.runs.describe(run_id)
        if described is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return dict(described)

    return app


app = create_app()
