"""Live accuracy on hand-built forecasts and actuals (SQLite and PostgreSQL): the numbers,
the drift verdict, the drift-retrain choice, the endpoint and the Prometheus gauges."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
import math
from collections.abc import Sequence

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from forecaster.store import registry
from forecaster.usecases.accuracy import all_accuracy, drifting_series, series_accuracy
from forecaster.store.tables import Forecast, ModelVersion, Series, write_session
from forecaster.errors import SeriesNotFound
from forecaster.store.observations import upsert as upsert_observations
from tests.api_server import PUSHED, make_settings, running_api

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
VALUES = [10, 12, 11, 13, 15, 14, 16, 18, 17, 20]  # observations at T0 + 0h .. 9h
# v2 (the champion) forecasts targets 4..9 as (value, lower, upper); target 9 twice, the later one counts.
V2 = {4: (14, 13, 15), 5: (15, 14, 16), 6: (15, 14, 16), 7: (17, 16, 18), 8: (19, 18.5, 19.5), 9: (19, 19, 21)}
V1 = {1: 11.0, 2: 12.0, 3: 12.0}  # retired v1, no intervals


def _series(session: Session, key: str = PUSHED) -> Series:
    s = Series(key=key, source="push", frequency="1h", params={})
    session.add(s)
    session.flush()
    return s


def _version(session: Session, series: Series, version: int, *, created_at: dt.datetime = T0,
             status: str = "retired") -> ModelVersion:
    mv = ModelVersion(series_id=series.id, version=version, hyperparameters={}, scaler={}, weights=b"",
                      metrics={}, lineage={}, status=status, status_reason=None, created_at=created_at)
    session.add(mv)
    session.flush()
    return mv


def _observe(session: Session, series: Series, hours: Sequence[int], values: Sequence[float]) -> None:
    """Upsert observations the way ingest does, which fills in the stored forecasts' actuals."""
    frame = pd.DataFrame({"ts": [T0 + h * HOUR for h in hours], "value": [float(v) for v in values]})
    upsert_observations(session, series, frame)


def _forecast(session: Session, series: Series, mv: ModelVersion | None, hour: int, value: float,
              lower: float | None = None, upper: float | None = None, *, method: str = "model",
              made_at: dt.datetime | None = None) -> None:
    session.add(Forecast(series_id=series.id, model_version_id=mv.id if mv else None, method=method,
                         made_at=made_at or T0 + (hour - 1) * HOUR, target_ts=T0 + hour * HOUR, value=value,
                         lower=lower, upper=upper, level=0.9 if lower is not None else None))
    session.flush()


def _build(sm: sessionmaker[Session]) -> None:
    """v1 served targets 1..3, the naive baseline too, v2 (champion) targets 4..9."""
    with write_session(sm) as session:
        s = _series(session)
        _observe(session, s, [0], VALUES[:1])
        v1, v2 = _version(session, s, 1), _version(session, s, 2)
        registry.promote(session, series_key=PUSHED, version=2)
        for h, v in V1.items():
            _forecast(session, s, v1, h, v)
            _forecast(session, s, None, h, VALUES[h - 1], method="naive")
        _forecast(session, s, v2, 9, 25.0, 24.0, 26.0)  # superseded by the later forecast of the same target
        for h, (v, lo, hi) in V2.items():
            _forecast(session, s, v2, h, v, lo, hi)
        _forecast(session, s, v2, 10, 21.0, 20.0, 22.0)  # no actual yet: not counted
        _observe(session, s, range(1, 10), VALUES[1:])


def test_live_accuracy_counts_mae_mase_and_coverage_per_version(sm: sessionmaker[Session]) -> None:
    _build(sm)
    with sm() as session:
        acc = series_accuracy(session, series_key=PUSHED, window=100, min_actuals=6)
    rows = {(r.method, r.model_version): r for r in acc.rows}
    assert set(rows) == {("model", 2), ("model", 1), ("naive", None)}
    v2 = rows["model", 2]
    # errors 1,1,1,1,2,1 against naive errors 2,1,2,2,1,3
    assert (v2.count, v2.mae, v2.mase, v2.coverage) == (6, pytest.approx(7 / 6), pytest.approx(7 / 11),
                                                        pytest.approx(5 / 6))
    assert (v2.first_target, v2.last_target) == (T0 + 4 * HOUR, T0 + 9 * HOUR)
    v1 = rows["model", 1]
    assert (v1.count, v1.mae, v1.mase, v1.coverage) == (3, pytest.approx(1.0), pytest.approx(0.6), None)
    assert rows["naive", None].mase == pytest.approx(1.0)  # the naive forecast is naive
    assert acc.rows[0].model_version == 2  # most recent first
    assert acc.champion_version == 2 and acc.serving == v2
    assert acc.champion_live_mase == pytest.approx(7 / 11)
    assert not acc.drifting
    assert acc.reason == "v2 live MASE 0.636 over the last 6 actuals is below naive (1.000)"


def test_live_accuracy_covers_only_the_latest_window_of_targets(sm: sessionmaker[Session]) -> None:
    _build(sm)
    with sm() as session:
        acc = series_accuracy(session, series_key=PUSHED, window=3, min_actuals=3)
    v2 = next(r for r in acc.rows if r.model_version == 2)
    # targets 7, 8, 9: errors 1, 2, 1; naive 2, 1, 3
    assert (v2.count, v2.mae, v2.mase, v2.coverage) == (3, pytest.approx(4 / 3), pytest.approx(4 / 6),
                                                        pytest.approx(2 / 3))


def test_no_drift_verdict_before_enough_actuals(sm: sessionmaker[Session]) -> None:
    _build(sm)
    with sm() as session:
        acc = series_accuracy(session, series_key=PUSHED, window=100, min_actuals=7)
    assert not acc.drifting
    assert acc.reason == "v2 has 6 actuals; drift is judged from 7"


def _drifting(sm: sessionmaker[Session], key: str, *, bad_from: int = 1) -> None:
    """A champion v1 trained at T0 whose forecasts from ``bad_from`` on miss by 5 (naive misses by 1)."""
    with write_session(sm) as session:
        s = _series(session, key)
        _observe(session, s, [0], [0.0])
        v1 = _version(session, s, 1)
        registry.promote(session, series_key=key, version=1)
        for h in range(1, 9):
            _forecast(session, s, v1, h, h - 1 + (5.0 if h >= bad_from else 0.5))
        _observe(session, s, range(1, 9), range(1, 9))


def test_a_champion_worse_than_naive_drifts(sm: sessionmaker[Session]) -> None:
    _drifting(sm, "push:bad")
    with sm() as session:
        acc = series_accuracy(session, series_key="push:bad", window=100, min_actuals=8)
        assert all_accuracy(session, window=100, min_actuals=8)["push:bad"] == acc
    assert acc.drifting and acc.champion_live_mase == pytest.approx(4.0)
    assert acc.reason == "v1 live MASE 4.000 over the last 8 actuals is above naive (1.000)"


def test_drift_retrain_picks_drifting_configured_series_once_per_window_of_fresh_actuals(
    sm: sessionmaker[Session],
) -> None:
    settings = make_settings("sqlite://", monitoring={"accuracy_window": 4, "drift_min_actuals": 4},
                             series=[{"key": k, "source": "push", "frequency": "1h"}
                                     for k in ("push:bad", "push:good")])
    _drifting(sm, "push:bad")
    _drifting(sm, "push:good", bad_from=99)
    _drifting(sm, "push:undeclared")  # drifts too, but only configured series are retrained
    with sm() as session:
        assert drifting_series(session, settings) == ["push:bad"]
    with write_session(sm) as session:  # a retrain at 6h (rejected): it saw the window's evidence
        _version(session, session.query(Series).filter_by(key="push:bad").one(), 2,
                 created_at=T0 + 6 * HOUR, status="rejected")
    with sm() as session:
        assert drifting_series(session, settings) == []
        assert series_accuracy(session, series_key="push:bad", window=4, min_actuals=4).drifting
    with write_session(sm) as session:  # four more bad forecasts made after the retrain
        s = session.query(Series).filter_by(key="push:bad").one()
        v1 = registry.champion_of(session, s.id)
        for h in range(9, 13):
            _forecast(session, s, v1, h, h + 4.0, made_at=T0 + 7 * HOUR + h * dt.timedelta(minutes=1))
        _observe(session, s, range(9, 13), range(9, 13))
    with sm() as session:
        assert drifting_series(session, settings) == ["push:bad"]


def test_a_baseline_served_series_has_no_drift_and_reports_the_baselines_accuracy(
    sm: sessionmaker[Session],
) -> None:
    with write_session(sm) as session:
        s = _series(session)
        _observe(session, s, [0], [1.0])
        for h in range(1, 4):
            _forecast(session, s, None, h, float(h), float(h) - 1, float(h) + 1, method="seasonal_naive")
        _observe(session, s, range(1, 4), [1.0, 3.0, 3.0])
    with sm() as session:
        acc = series_accuracy(session, series_key=PUSHED)
    assert acc.champion_version is None and acc.champion_live_mase is None and not acc.drifting
    assert acc.serving is not None and acc.serving.method == "seasonal_naive"
    # errors 0, 1, 0 against naive errors 0, 2, 0; every actual inside its interval
    assert (acc.serving.mae, acc.serving.mase, acc.serving.coverage) == (pytest.approx(1 / 3), 0.5, 1.0)
    assert acc.reason.startswith("no champion")


def test_unknown_series_raises_naming_the_key(sm: sessionmaker[Session]) -> None:
    with sm() as session, pytest.raises(SeriesNotFound, match="'nope:x'"):
        series_accuracy(session, series_key="nope:x")


# ---------------------------------------------------------------- over HTTP


def test_accuracy_endpoint_and_gauges_show_the_live_numbers(sm: sessionmaker[Session], db_url: str) -> None:
    _build(sm)
    settings = make_settings(db_url, monitoring={"drift_min_actuals": 5})
    with running_api(settings) as api:
        r = api.client.get("/v1/series/push%3Ameter/accuracy")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["champion_version"], body["drifting"], body["min_actuals"]) == (2, False, 5)
        assert body["champion_live_mase"] == pytest.approx(7 / 11)
        first = body["rows"][0]
        assert (first["method"], first["model_version"], first["count"]) == ("model", 2, 6)
        assert first["coverage"] == pytest.approx(5 / 6) and first["last_target"] == "2024-03-01T09:00:00Z"

        missing = api.client.get("/v1/series/nope:x/accuracy")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert "nope:x" in missing.json()["detail"]
        declared = api.client.get("/v1/series/sine:trained/accuracy").json()  # configured, never ingested
        assert declared["rows"] == [] and declared["reason"].startswith("no forecasts yet")

        text = api.client.get("/metrics").text
    gauges = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith(("forecaster_live_", "forecaster_drifting"))}
    assert math.isclose(gauges['forecaster_live_mase{series="push:meter"}'], 7 / 11)
    assert math.isclose(gauges['forecaster_live_coverage{series="push:meter"}'], 5 / 6)
    assert gauges['forecaster_drifting{series="push:meter"}'] == 0.0


def test_an_ingest_run_retrains_a_drifting_champion_when_configured(
    sm: sessionmaker[Session], tmp_path: Path
) -> None:
    from forecaster.store import jobruns
    from forecaster.store.tables import JobRun
    from forecaster.usecases.executor import InProcessQueue

    csv = tmp_path / "bad.csv"
    csv.write_text("ts,value\n" + "".join(f"{(T0 + h * HOUR).isoformat()},{h}\n" for h in range(0, 9)))
    series = [{"key": "csv:bad", "source": "csv", "frequency": "1h", "params": {"path": str(csv)}}]
    _drifting(sm, "csv:bad")
    for retrain_on_drift in (False, True):
        settings = make_settings("sqlite://", series=series, monitoring={
            "accuracy_window": 8, "drift_min_actuals": 8, "retrain_on_drift": retrain_on_drift})
        run = jobruns.create_run(sm, settings, kind="ingest")
        InProcessQueue(sm, settings).execute(run.id)
    with sm() as session:
        runs = [(r.kind, r.trigger, r.series_keys) for r in session.query(JobRun).order_by(JobRun.id)]
    # only the second ingest (retrain_on_drift = true) started a drift retrain of its series
    assert runs == [("ingest", "manual", ["csv:bad"]), ("ingest", "manual", ["csv:bad"]),
                    ("train", "drift", ["csv:bad"])]


@pytest.mark.parametrize(("served_miss", "drifts"), [(0.5, False), (5.0, True)])
def test_drift_is_judged_on_what_serves_not_on_the_recurrent_model(
    sm: sessionmaker[Session], served_miss: float, drifts: bool,
) -> None:
    """v1 serves AutoETS (its stored forecasts); its recurrent model scored far worse (or far better) on
    the holdout. Live drift follows the served forecasts' errors, and the model's figure stays beside it."""
    key = "push:served"
    with write_session(sm) as session:
        s = _series(session, key)
        _observe(session, s, [0], [0.0])
        v1 = _version(session, s, 1)
        v1.hyperparameters = {"serving": {"members": ["ets"], "method": "ets", "label": "AutoETS"}}
        v1.metrics = {"model": {"mase": 1.0 / served_miss}, "served": {"method": "ets", "mase": served_miss / 2}}
        registry.promote(session, series_key=key, version=1, force=True)
        for h in range(1, 9):
            _forecast(session, s, v1, h, h - 1 + served_miss, method="ets")
        _observe(session, s, range(1, 9), range(1, 9))
    settings = make_settings("sqlite://", series=[{"key": key, "source": "push", "frequency": "1h"}],
                             monitoring={"accuracy_window": 100, "drift_min_actuals": 8})
    with sm() as session:
        acc = series_accuracy(session, series_key=key, window=100, min_actuals=8)
        due = drifting_series(session, settings)
    assert acc.serving is not None and acc.serving.method == "ets"
    assert acc.champion_live_mase == pytest.approx(abs(1 - served_miss))  # naive misses by 1
    assert acc.drifting is drifts and due == ([key] if drifts else [])
