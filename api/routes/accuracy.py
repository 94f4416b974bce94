"""Live accuracy of a series' stored forecasts, per model version, and its drift verdict."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SessionDep, SettingsDep
from api.routes import problems
from forecaster.errors import SeriesNotFound
from forecaster.usecases.accuracy import AccuracyRow, SeriesAccuracy, series_accuracy

router = APIRouter(prefix="/v1", tags=["forecasts"])


class StepAccuracyOut(BaseModel):
    """How one forecaster did at one step of its paths."""

    model_config = ConfigDict(frozen=True)

    step: int
    count: int
    mae: float | None
    mase: float | None = Field(description="MAE / that of the naive forecast made at the same origins")
    coverage: float | None


class AccuracyRowOut(BaseModel):
    """How one forecaster (a model version, or a baseline) did on the targets whose actuals arrived."""

    model_config = ConfigDict(frozen=True)

    method: str = Field(description="model, naive or seasonal_naive")
    model_version: int | None = Field(description="Version number; null for a baseline")
    model_version_id: int | None
    count: int = Field(description="Targets with an actual in the window")
    mae: float | None = Field(description="Mean absolute error")
    mase: float | None = Field(description="MAE / the naive forecast's MAE on the same targets (below 1 beats naive)")
    coverage: float | None = Field(description="Share of actuals inside the stored interval; null without intervals")
    first_target: dt.datetime | None
    last_target: dt.datetime | None
    by_step: list[StepAccuracyOut] = Field(default_factory=list, description=(
        "The same figures at each step of the paths that has actuals (step 1 first); the flat ones are step 1"))

    @classmethod
    def from_domain(cls, r: AccuracyRow) -> AccuracyRowOut:
        return cls(method=r.method, model_version=r.model_version, model_version_id=r.model_version_id,
                   count=r.count, mae=r.mae, mase=r.mase, coverage=r.coverage, first_target=r.first_target,
                   last_target=r.last_target,
                   by_step=[StepAccuracyOut(step=x.step, count=x.count, mae=x.mae, mase=x.mase, coverage=x.coverage)
                            for x in r.by_step])


class AccuracyOut(BaseModel):
    """Live accuracy of a series: one row per forecaster, newest first, and the drift verdict."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "series_key": "sine:demo", "window": 100, "min_actuals": 20, "champion_version": 3,
        "champion_live_mase": 0.82, "drifting": False,
        "reason": "v3 live MASE 0.820 over the last 48 actuals is below naive (1.000)",
        "rows": [{"method": "model", "model_version": 3, "model_version_id": 12, "count": 48, "mae": 0.11,
                  "mase": 0.82, "coverage": 0.9, "first_target": "2024-03-01T00:00:00Z",
                  "last_target": "2024-03-02T23:00:00Z",
                  "by_step": [{"step": 1, "count": 48, "mae": 0.11, "mase": 0.82, "coverage": 0.9},
                              {"step": 2, "count": 47, "mae": 0.14, "mase": 0.8, "coverage": 0.89}]}],
    }]})

    series_key: str
    window: int = Field(description="Most recent targets per forecaster that the numbers cover")
    min_actuals: int = Field(description="Actuals the champion needs before drift is judged")
    champion_version: int | None
    champion_live_mase: float | None
    drifting: bool = Field(description="The champion's live MASE is above 1 over at least min_actuals actuals")
    reason: str
    rows: list[AccuracyRowOut]

    @classmethod
    def from_domain(cls, a: SeriesAccuracy) -> AccuracyOut:
        return cls(series_key=a.series_key, window=a.window, min_actuals=a.min_actuals,
                   champion_version=a.champion_version, champion_live_mase=a.champion_live_mase,
                   drifting=a.drifting, reason=a.reason, rows=[AccuracyRowOut.from_domain(r) for r in a.rows])


@router.get("/series/{key}/accuracy", response_model=AccuracyOut, responses=problems(404))
def read_accuracy(key: str, session: SessionDep, settings: SettingsDep) -> AccuracyOut:
    """Live accuracy per model version (count, MAE, MASE against naive, coverage) and whether the champion drifts."""
    m = settings.monitoring
    try:
        acc = series_accuracy(session, series_key=key, window=m.accuracy_window, min_actuals=m.drift_min_actuals)
    except SeriesNotFound:
        if settings.series_by_key(key) is None:
            raise
        # Declared in the config but never ingested: nothing to measure yet.
        acc = SeriesAccuracy(key, m.accuracy_window, m.drift_min_actuals, [], None, None, False,
                             "no forecasts yet: ingest the series first")
    return AccuracyOut.from_domain(acc)
