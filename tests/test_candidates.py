"""The ladder on real bundled data: statistical candidates, the choice on validation,
what a forecast says made it, the live ACI interval, and failures that stay contained."""

from __future__ import annotations

from typing import Any

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from forecaster.modelling import candidates
from forecaster.config.loading import load_settings
from forecaster.config.settings import ModelSpec
from forecaster.store.tables import Forecast, ModelVersion, write_session
from forecaster.modelling.scoring import conformal_halfwidth
from forecaster.usecases.forecasting import get_forecast, live_interval, refresh_forecast
from forecaster.store.series import find_series
from forecaster.usecases.ingest import ingest_series
from forecaster.modelling.intervals import ACIState, coverage_of, walk
from forecaster.modelling.fitting import train_series
from forecaster.modelling.gate import gate
from forecaster.modelling import paths
from forecaster.modelling.selection import Choice, choose, ladder, walk_forward
from forecaster.usecases.retrain import retrain_series

SNAPSHOTS = Path(__file__).parents[1] / "forecaster" / "snapshots"
TINY = dict(hidden_size=8, epochs=2, batch_size=64, device="cpu")
FAST_CANDIDATES = ("ets_seasonal", "theta")  # the two quickest to fit (~1 s together)


def snapshot(name: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    df = pd.read_csv(SNAPSHOTS / f"{name}.csv")
    return pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True)), df["value"].to_numpy(np.float64)


def test_a_statistical_candidate_that_wins_is_judged_on_holdout_folds_its_choice_never_saw() -> None:
    ts, v = snapshot("nino12_sst_monthly")  # monthly sea temperature: a strong yearly cycle
    out = train_series(ts, v, frequency="1MS", spec=ModelSpec(candidates=FAST_CANDIDATES, **TINY))
    m = out.metrics
    tried, both = m["selection"]["tried_val_mae"], m["selection"]["tried_val_holdout_mae"]
    folds = m["served"]["holdout_folds"]
    assert len(folds) == 4 and folds[0]["label"] == min(tried, key=tried.get)  # fold 0: validation's choice
    assert m["served"]["label"] == min(both, key=both.get)  # validation and the whole holdout: what serves
    # Two epochs leave the network far behind the seasonal models: one of them serves.
    assert set(m["served"]["members"]) & set(FAST_CANDIDATES), m["served"]
    assert m["served"]["mase"] < m["naive"]["mase"] and m["served"]["mase"] < m["model"]["mase"]
    assert gate(m)[0] and gate(m)[1].startswith(m["served"]["label"])
    # Every candidate is reported on validation and holdout, with its own ACI interval.
    for name in ("model", "naive", "seasonal_naive", *FAST_CANDIDATES):
        block = m["candidates"][name]
        assert block["val"]["mase"] > 0 and block["holdout"]["mase"] > 0 and 0 <= block["interval"]["coverage"] <= 1
    # The stored state is plain JSON and serves the same forecasts it was chosen with.
    stored = json.loads(json.dumps(out.hyperparameters["serving"]["fitted"]))
    for name, d in stored.items():
        fc, _ = candidates.run(candidates.Fitted.from_dict(d), v, len(v) - 12)
        p_hold = len(v) - out.hyperparameters["holdout"]
        again, _ = candidates.run(candidates.Fitted.from_dict(d), v, p_hold)
        assert np.allclose(fc, again[-12:]) and np.isfinite(fc).all()
        assert m["candidates"][name]["form"] == d["form"]  # e.g. "ETS(M,N,A)"


def test_choose_uses_only_validation_and_prefers_a_combination_only_when_it_wins() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    a, b = y + np.array([1, -1, 1, -1]), y - np.array([1, -1, 1, -1])  # errors cancel in the mean
    choice, tried = choose({"ets": a, "theta": b, "naive": y + 3}, y)
    assert choice.members == ("ets", "theta") and choice.method == "combination" and choice.val_mae == 0
    assert choice.label == "mean of AutoETS + AutoTheta" and tried["naive"] == 3
    choice, _ = choose({"ets": y + 0.1, "naive": y + 3}, y)
    assert choice.members == ("ets",) and choice.label == "AutoETS"



def test_for_paths_a_combination_serves_only_when_it_wins_on_every_fold_not_by_one_lucky_stretch() -> None:
    """Two candidates, each 1.0 off at every origin and step. Where their errors cancel at half the
    origins spread over every fold, their mean wins everywhere and serves; where they cancel only on the
    first fold's origins, the mean still has the lower validation MAE, but its whole lead is one stretch:
    a tie, and the better single one serves (ties by name)."""
    n, h = 80, 4
    y = np.zeros((n, h))
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None] * np.ones((1, h))
    spread = {"theta": y + 1.0, "arima": y + sign}  # opposite on every other origin
    choice, _ = choose(spread, y)
    assert choice.members == ("arima", "theta") and choice.val_mae == 0.5
    lucky = np.ones((n, h))
    lucky[:8] = -1.0  # opposite on the first fold's origins only
    choice, tried = choose({"theta": y + 1.0, "arima": y + lucky}, y)
    assert tried["mean of AutoARIMA + AutoTheta"] < 1.0  # the mean did lead on validation
    assert choice.members == ("arima",) and choice.val_mae == 1.0
    one_step, _ = choose({"theta": np.ones(n), "arima": lucky[:, 0]}, np.zeros(n))  # h = 1: as before
    assert one_step.members == ("arima", "theta")


def test_the_holdout_is_walked_forward_fold_by_fold_and_step_one_is_chosen_apart() -> None:
    """AutoARIMA is 0.9 off on validation and 2.0 off on the holdout, AutoTheta 1.0 off on both, the
    recurrent model 0.1 off at step 1 and 3.0 off at steps 2-4. The holdout's first fold is forecast by
    validation's choice (AutoARIMA); once a fold of the holdout is in, AutoTheta leads and forecasts the
    rest, and serves; the model's first step beats everything's, so step 1 is the model's throughout."""
    n, h = 40, 4
    y_val, y_hold = np.zeros((n, h)), np.zeros((n, h))
    fc = {"theta": np.ones((2 * n, h)), "arima": np.concatenate([np.full((n, h), 0.9), np.full((n, h), 2.0)]),
          "model": np.tile([0.1, 3.0, 3.0, 3.0], (2 * n, 1))}
    served, tried, hold, picks = walk_forward(fc, y_val, y_hold)
    assert [c.label for c in picks] == ["AutoARIMA; step 1 recurrent model"] + ["AutoTheta; step 1 recurrent model"] * 3
    assert hold[:10].tolist() == [[0.1, 2.0, 2.0, 2.0]] * 10 and hold[10:].tolist() == [[0.1, 1.0, 1.0, 1.0]] * 30
    assert served.members == ("theta",) and served.first == ("model",) and tried["AutoARIMA"] == 1.45
    assert served.method == "combination" and served.every == ("theta", "model")
    assert served.combine({k: f[0] for k, f in fc.items()}).tolist() == [0.1, 1.0, 1.0, 1.0]  # one path (h,)
    assert Choice.of(json.loads(json.dumps(served.to_dict()))) == Choice(("theta",), 0.0, ("model",))
    one_step, _, hold1, _ = walk_forward({k: f[:, :1] for k, f in fc.items()}, y_val[:, :1], y_hold[:, :1])
    assert one_step.members == ("model",) and not one_step.first and (hold1 == 0.1).all()  # nothing apart
    alone, _, none, picks = walk_forward({k: f[:n] for k, f in fc.items()}, y_val, y_hold[:0])  # no holdout origins: validation's choice
    assert alone.members == ("arima",) and none.shape == (0, h) and not picks


def test_the_ladder_s_holdout_figure_is_the_walk_forward_s_and_a_baseline_it_serves_needs_no_version() -> None:
    ts, v = snapshot("greensboro_temp_hourly")
    ts, v = ts[-1500:], v[-1500:]
    p_val, p_hold, h = 900, 1200, 24
    lad = ladder(ts, v, p_val=p_val, p_hold=p_hold, season=24, model_forecasts=None, level=0.9, scale=1.0,
                 statistical=(), horizon=h)
    o_hold = paths.origins(p_hold, len(v), h)
    y_hold = paths.actual_paths(v, o_hold, h)
    m = lad.metrics
    assert m["served"]["mae"] == pytest.approx(float(np.mean(np.abs(y_hold - lad.hold_forecasts))), rel=1e-12)
    # Hourly temperature: the last hour leads at step 1, yesterday's hours over the day.
    assert m["served"]["label"] == "seasonal naive; step 1 naive" and lad.choice.every == ("seasonal_naive", "naive")
    assert (lad.hold_forecasts[:, 0] == v[o_hold - 1]).all()
    promote, why = gate({**m, "naive": m["candidates"]["naive"]["holdout"], "model": m["served"]})
    assert not promote and why.endswith(f"the ladder chose {m['served']['label']}: the baseline fallback serves it")


def test_a_failed_candidate_never_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    ts, v = snapshot("greensboro_temp_hourly")
    ts, v = ts[-1500:], v[-1500:]
    real = candidates.fit_one

    def flaky(name: str, values: np.ndarray, stop: int, season: int | None,
              keep: dict[str, Any] | None = None) -> candidates.Fitted:
        if name == "theta":
            raise FloatingPointError("singular matrix")
        return real(name, values, stop, season, keep)

    monkeypatch.setattr(candidates, "fit_one", flaky)
    lad = ladder(ts, v, p_val=1000, p_hold=1250, season=24, model_forecasts=None, level=0.9,
                 scale=float(np.mean(np.abs(np.diff(v[:1000])))), statistical=("ets", "theta"))
    blocks = lad.metrics["candidates"]
    assert blocks["theta"]["failed"] == "FloatingPointError: singular matrix"
    assert blocks["ets"]["form"].startswith("ETS(") and "naive" in blocks and "seasonal_naive" in blocks
    assert "theta" not in lad.choice.members and len(lad.hold_forecasts) == 250


def test_the_interval_widens_after_a_volatility_shift_and_keeps_its_coverage() -> None:
    ts, v = snapshot("sp500_daily_close")
    steps, t = np.diff(v), ts[1:]  # naive one-step errors of the S&P 500 close
    calm = steps[(t >= "2005-01-01") & (t < "2007-01-01")]  # two quiet years calibrate it
    storm = steps[(t >= "2008-09-01") & (t < "2009-01-01")]  # then the autumn of 2008
    start = ACIState.start(calm, 0.9)
    widths, end = walk(start, storm)
    assert end.halfwidth > 3 * start.halfwidth  # ~13 points before, ~50 after
    static = float(np.mean(np.abs(storm) <= conformal_halfwidth(calm, 0.9)))
    assert static < 0.5 < 0.85 <= coverage_of(storm, widths)  # 33 % frozen, 88 % adaptive
    calm_widths, _ = walk(start, calm)
    assert 0.87 <= coverage_of(calm, calm_widths) <= 0.93  # and no over-widening when nothing shifts
    assert ACIState.from_dict(json.loads(json.dumps(end.to_dict()))) == end


def retrained_nino(tmp_path: Path, sm: sessionmaker[Session], cands: tuple[str, ...], more: str = "") -> Any:
    """The bundled Niño 1+2 series ingested from CSV and trained once (two epochs): the retrain's report."""
    path = tmp_path / "forecaster.toml"
    path.write_text(
        '[[series]]\nkey = "csv:nino12"\nsource = "csv"\nfrequency = "1MS"\nunit = "°C"\n' + more +
        f'params = {{ path = "{SNAPSHOTS / "nino12_sst_monthly.csv"}" }}\n'
        f'model = {{ epochs = 2, hidden_size = 8, candidates = {json.dumps(list(cands))} }}\n')
    s = load_settings(path)
    ingest_series(sm, s, s.series[0])
    return retrain_series(sm, s.series[0])


def test_a_served_forecast_names_what_made_it_and_its_interval_follows_live_errors(
    tmp_path: Path, sm: sessionmaker[Session]
) -> None:
    report = retrained_nino(tmp_path, sm, FAST_CANDIDATES)
    assert report.status == "promoted", report.reason
    with sm() as session:
        f = get_forecast(session, series_key="csv:nino12")
        mv = session.get(ModelVersion, report.model_version_id)
        assert mv is not None
        serving = mv.hyperparameters["serving"]
        assert (f.method, f.served_by) == (serving["method"], serving["label"])
        assert f.served_by != "recurrent model" and f.mase == mv.metrics["served"]["mase"]
        assert f.model_mase == mv.metrics["model"]["mase"] and f.model_mase != f.mase  # the model's figure beside
        half0 = (f.upper - f.lower) / 2  # type: ignore[operator]
        assert half0 == pytest.approx(mv.metrics["served_interval"]["halfwidth"])
    # Actuals far outside the stated interval arrive: the next interval is wider.
    with write_session(sm) as session:
        series = find_series(session, "csv:nino12")
        assert series is not None
        target = pd.Timestamp(f.target_ts)
        for i in range(12):
            session.add(Forecast(series_id=series.id, model_version_id=mv.id, method=f.method,
                                 target_ts=(target + pd.DateOffset(months=i)).to_pydatetime(), value=f.value,
                                 lower=f.lower, upper=f.upper, level=f.level, actual=f.value + 5 * half0))
        session.flush()
        half, level = live_interval(session, session.get(ModelVersion, mv.id))  # type: ignore[arg-type]
        assert level == 0.9 and half is not None and half > 1.5 * half0
        row = refresh_forecast(session, series)
        assert row is not None and row.upper - row.value == pytest.approx(half)


def test_a_path_whose_first_step_was_chosen_apart_serves_that_candidate_s_first_step(
    tmp_path: Path, sm: sessionmaker[Session]
) -> None:
    report = retrained_nino(tmp_path, sm, ("ets_seasonal",), "horizon = 12\n")
    assert report.status == "promoted", report.reason
    last = float(snapshot("nino12_sst_monthly")[1][-1])
    with write_session(sm) as session:
        series = find_series(session, "csv:nino12")
        mv = session.get(ModelVersion, report.model_version_id)
        assert series is not None and mv is not None
        serving = {**mv.hyperparameters["serving"], "members": ["ets_seasonal"], "first": []}
        mv.hyperparameters = {**mv.hyperparameters, "serving": serving}
        session.flush()
        refresh_forecast(session, series)
        whole = [p.value for p in get_forecast(session, series_key="csv:nino12").path]
        mv.hyperparameters = {**mv.hyperparameters, "serving": {**serving, "first": ["naive"]}}
        session.flush()
        refresh_forecast(session, series)
        apart = [p.value for p in get_forecast(session, series_key="csv:nino12").path]
    assert len(whole) == len(apart) == 12 and whole[0] != last
    assert apart[0] == last and apart[1:] == whole[1:]  # step 1 the last value (naive), then seasonal ETS


def test_statsforecast_loads_only_where_candidates_are_fitted_or_served() -> None:
    import subprocess
    import sys

    code = ("import pkgutil, importlib, sys, forecaster, api.app, api.dashboard.render\n"
            "for m in pkgutil.walk_packages(forecaster.__path__, 'forecaster.'): importlib.import_module(m.name)\n"
            "print('statsforecast' in sys.modules, 'statsmodels' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_the_dashboard_flags_a_live_coverage_off_its_stated_level() -> None:
    from api.dashboard.render import _coverage_flag
    from forecaster.usecases.accuracy import AccuracyRow, SeriesAccuracy

    def acc(coverage: float, count: int) -> SeriesAccuracy:
        row = AccuracyRow("ets", 3, 7, count, 1.0, 0.9, coverage, None, None, None)
        return SeriesAccuracy("k", 100, 10, [row], 3, row, False, "")

    assert _coverage_flag(acc(0.71, 40), 0.9) == "interval covers 71% (stated 90%)"
    assert _coverage_flag(acc(0.99, 40), None) == "interval covers 99% (stated 90%)"
    assert _coverage_flag(acc(0.88, 40), 0.9) == ""  # within 5 points: calibrated
    assert _coverage_flag(acc(0.5, 9), 0.9) == ""  # too few actuals to judge


def test_a_one_step_candidate_forecast_never_sees_the_values_after_its_target():
    """Found by bench/quality.py: AutoTheta's forward(fitted=True) re-ran its seasonal test and decomposition
    on the whole series, so its 'one-step' forecast of t moved when only values after t changed."""
    import pandas as pd

    from forecaster.modelling import candidates as c

    v = pd.read_csv(Path(__file__).resolve().parents[1] / "forecaster" / "snapshots" / "nino12_sst_monthly.csv")[
        "value"].to_numpy(float)
    t = 610
    later = v.copy()
    later[t + 1 :] = later[t + 1 :] * 3 + 5  # only the future changes
    for name in ("theta", "ets_seasonal", "arima", "sarima"):
        f = c.fit_one(name, v, 600, 12)
        honest = c.run_paths(f, v, np.array([t]), 1)[0, 0]
        assert c.run(f, v, 600)[0][t - 600] == pytest.approx(honest, rel=1e-6), name
        assert c.run(f, later, 600)[0][t - 600] == pytest.approx(honest, rel=1e-6), name


@pytest.mark.parametrize("name, season, stop, candidate", [
    ("nino12_sst_monthly", 12, 500, "arima"), ("sp500_daily_close", None, 4000, "arima"),
    ("greensboro_temp_hourly", 24, 6000, "arima"), ("greensboro_temp_hourly", 24, 6000, "sarima")])
def test_arima_paths_from_one_filter_pass_are_the_paths_of_a_fresh_forward_at_each_origin(
        name: str, season: int | None, stop: int, candidate: str) -> None:
    """The one-pass ARIMA paths (the ladder's, the bench's) must be what statsforecast's ``forward`` gives
    at each origin on the values before it: a wrong state carried between origins would bend every
    path after the first (a stale covariance did, by 0.1 on Miami irradiance, before it was fixed)."""
    _, v = snapshot(name)
    f = candidates.fit_one(candidate, v, stop, season)
    at = np.arange(stop, min(len(v) - 24, stop + 400), 7)
    fast = candidates.run_paths(f, v, at, 24)
    model = candidates._restore(f)
    slow = np.array([model.forward(y=v[f.fit_start : o], h=24)["mean"] for o in at])
    assert fast.shape == (len(at), 24)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-8 * float(np.abs(v).max()))


def test_long_seasons_get_a_seasonal_arima_candidate_and_it_learns_the_day_on_real_hourly_data() -> None:
    """AutoARIMA searches seasonal orders up to m = 12 only (too slow at 24+); hourly and weekly series get
    ARIMA(1,0,1)(0,1,1)[m] beside it. On Greensboro's hourly temperatures its day-ahead path beats
    seasonal naive and the non-seasonal AutoARIMA, which cannot see the daily cycle."""
    assert "sarima" in candidates.names_for(24) and "sarima" in candidates.names_for(52)
    assert "sarima" not in candidates.names_for(12) and "sarima" not in candidates.names_for(5)
    assert "sarima" not in candidates.names_for(None)
    _, v = snapshot("greensboro_temp_hourly")
    stop = 6000
    at = np.arange(stop, stop + 24 * 40, 24)
    y = np.stack([v[o : o + 24] for o in at])
    seasonal = candidates.fit_one("sarima", v, stop, 24)
    assert seasonal.form == "ARIMA(1,0,1)(0,1,1)[24]"
    mae = {name: float(np.mean(np.abs(y - candidates.run_paths(candidates.fit_one(name, v, stop, 24), v, at, 24))))
           for name in ("sarima", "arima")}
    snaive = float(np.mean(np.abs(y - np.stack([v[o - 24 : o] for o in at]))))
    assert mae["sarima"] < 0.9 * snaive and mae["sarima"] < mae["arima"], (mae, snaive)


def test_the_seasonal_arima_fit_equals_statsforecasts_own_on_real_hourly_data() -> None:
    """``fit_one`` takes the seasonal ARIMA's CSS estimates and fixes them, where statsforecast's CSS-ML
    would spend 100 likelihood evaluations in an ML search that does not move from them: the stored
    coefficients, sigma2 and every path must be what statsforecast's own fit gives. A statsforecast
    whose ML stage does move at m = 24 fails this test, and the shortcut must go."""
    from statsforecast.models import ARIMA

    _, v = snapshot("greensboro_temp_hourly")
    stop = 6000
    fast = candidates.fit_one("sarima", v, stop, 24)
    ref = ARIMA(order=candidates.SARIMA_ORDER, season_length=24,
                seasonal_order=candidates.SARIMA_SEASONAL).fit(v[stop - candidates.MAX_FIT : stop])
    state = candidates.decode_state(fast.state)
    assert state["coef"].keys() == ref.model_["coef"].keys()
    for k, x in ref.model_["coef"].items():
        assert state["coef"][k] == pytest.approx(x, abs=1e-12), k
    assert state["sigma2"] == pytest.approx(ref.model_["sigma2"], rel=1e-9)
    slow = candidates.Fitted("sarima", 24, stop - candidates.MAX_FIT, stop, candidates.encode_state(
        {k: x for k, x in ref.model_.items() if not (isinstance(x, np.ndarray) and x.size >= 100)}), fast.form, 0.0)
    at = np.arange(stop + 1, stop + 24 * 20, 11)
    np.testing.assert_allclose(candidates.run_paths(fast, v, at, 24), candidates.run_paths(slow, v, at, 24),
                               rtol=0, atol=1e-9 * float(np.abs(v).max()))


def test_a_stored_state_round_trips_through_json_with_its_non_finite_values_and_dtypes() -> None:
    """A fitted state goes to the registry as JSON and comes back for every refresh: matrices, NaN and
    infinities inside arrays, integer and boolean arrays, tuples must all come back as they were."""
    state = {"P": np.arange(12, dtype=np.float64).reshape(3, 4) / 7, "x": np.array([1.5, np.nan, -np.inf]),
             "arma": (1, 0, 1), "mask": np.array([True, False]), "n": np.array([3, 4], dtype=np.int64),
             "sigma2": float("nan")}
    back = candidates.decode_state(json.loads(json.dumps(candidates.encode_state(state))))
    np.testing.assert_array_equal(back["P"], state["P"])
    assert back["P"].shape == (3, 4)
    np.testing.assert_array_equal(back["x"], state["x"])  # NaN in the same place
    assert back["arma"] == (1, 0, 1) and back["mask"].dtype == np.bool_ and back["mask"].tolist() == [True, False]
    assert back["n"].dtype == np.int64 and back["n"].tolist() == [3, 4]
    assert np.isnan(back["sigma2"])
