"""Job runs (admin): trigger an ingest or a retrain off the request thread, and follow it.

On PostgreSQL a trigger only enqueues (one task per series, run by `forecaster worker`
processes); on SQLite the run goes to a thread of this process."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response, status

from api.deps import AdminDep, IdPath, StateDep
from api.routes import problems
from api.schemas import JobRunList, JobRunOut, JobTriggerIn, TrainTriggerIn
from forecaster.usecases import jobs as job_runs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[AdminDep])


def _trigger(state: StateDep, kind: str, body: JobTriggerIn | None, response: Response) -> JobRunOut:
    run = job_runs.start_run(state.sm, state.settings, state.queue, kind=kind, keys=body.keys if body else None,
                             trigger="api", snapshot_fallback=state.settings.snapshot_fallback,
                             cold=isinstance(body, TrainTriggerIn) and body.cold)
    response.headers["Location"] = f"/v1/jobs/runs/{run.id}"
    return JobRunOut.from_domain(run)


@router.post("/ingest", response_model=JobRunOut, status_code=status.HTTP_202_ACCEPTED,
             responses=problems(401, 403, 404, 422))
def trigger_ingest(state: StateDep, response: Response,
                   body: Annotated[JobTriggerIn | None, Body()] = None) -> JobRunOut:
    """Start an ingest of the named series (all configured when no keys); 202 with the run to poll."""
    return _trigger(state, "ingest", body, response)


@router.post("/train", response_model=JobRunOut, status_code=status.HTTP_202_ACCEPTED,
             responses=problems(401, 403, 404, 422))
def trigger_train(state: StateDep, response: Response,
                  body: Annotated[TrainTriggerIn | None, Body()] = None) -> JobRunOut:
    """Start a retrain of the named series (all configured when no keys; ``cold``: from scratch); 202 with the run."""
    return _trigger(state, "train", body, response)


@router.get("/runs", response_model=JobRunList, responses=problems(401, 403, 422))
def list_runs(
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    kind: Annotated[Literal["ingest", "train"] | None, Query()] = None,
) -> JobRunList:
    """Recent job runs, newest first."""
    return JobRunList(runs=[JobRunOut.from_domain(r) for r in job_runs.list_runs(state.sm, limit=limit, kind=kind)])


@router.get("/runs/{run_id}", response_model=JobRunOut, responses=problems(401, 403, 404))
def read_run(run_id: IdPath, state: StateDep) -> JobRunOut:
    """One job run with its progress (series done, failed, the one running now)."""
    return JobRunOut.from_domain(job_runs.get_run(state.sm, run_id))
