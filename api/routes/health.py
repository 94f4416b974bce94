"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import StateDep
from api.routes import problems
from api.schemas import HealthOut, ReadyOut
from forecaster.errors import StorageUnavailable
from forecaster.usecases.database import schema_state

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is alive (touches nothing else)."""
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut, responses=problems())
def readyz(state: StateDep) -> ReadyOut:
    """The database answers and its schema is at the revision this code expects.

    Raises:
        StorageUnavailable: the schema is behind (or ahead of) the code, naming both revisions.
    """
    schema = schema_state(state.engine)  # connection errors become 503 in problems.py
    if not schema.ready:
        raise StorageUnavailable(
            f"database schema is at revision {schema.current or 'none (empty database)'!s}, this code needs "
            f"{schema.head}: run `forecaster migrate`"
        )
    return ReadyOut(database=schema.database, schema_revision=schema.current, head_revision=schema.head)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}},
                             "description": "Prometheus text exposition format."}})
def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests by route and status, forecasts served, model age, run outcomes."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
