"""Warm and cold retrains (issue 19): a retrain starts from the champion's weights and statistical
forms where it can, says so in its lineage, and falls back to a cold one when it must."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.loading import load_settings
from forecaster.config.settings import SeriesSpec, Settings
from forecaster.modelling import candidates as cands
from forecaster.store.observations import upsert
from forecaster.store.series import sync_series
from forecaster.store.tables import ModelVersion, write_session
from forecaster.usecases.executor import InProcessQueue
from forecaster.usecases.jobs import get_run, start_run
from forecaster.usecases.retrain import retrain_series
from tests.api_server import wait_for

SNAPSHOTS = Path(__file__).resolve().parents[1] / "forecaster" / "snapshots"  # bundled real series
TINY = "epochs = 25, hidden_size = 16, window = 24, candidates = []"


def settings_for(tmp_path: Path, model: str = TINY, key: str = "push:warm") -> Settings:
    path = tmp_path / "forecaster.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path}/w.db"\n[[series]]\nkey = "{key}"\nsource = "push"\n'
                    f'frequency = "1h"\nhorizon = 6\nmodel = {{ {model} }}\n', encoding="utf-8")
    return load_settings(path)


def push(sm: sessionmaker[Session], spec: SeriesSpec, values: np.ndarray, start: int = 0) -> None:
    ts = pd.date_range("2024-01-01", periods=start + len(values), freq="1h", tz="UTC")[start:]
    with write_session(sm) as session:
        upsert(session, sync_series(session, spec), pd.DataFrame({"ts": ts, "value": values.astype(float)}))


def sine(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(np.arange(n) * 2 * np.pi / 24) * 5 + 20 + rng.normal(0, 0.3, n)


def lineage(sm: sessionmaker[Session], version: int | None) -> dict:
    with sm() as session:
        mv = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
        assert mv is not None
        return dict(mv.lineage)


def test_a_retrain_starts_from_the_champions_weights_and_its_lineage_says_so(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path)
    spec = s.series[0]
    push(sm, spec, sine(700))
    first = retrain_series(sm, spec)
    assert first.status == "promoted", first.reason
    v1 = lineage(sm, 1)
    assert v1["start"]["kind"] == "cold" and v1["start"]["why"] == "no version to start from"
    # A random network's first validation loss is far above what training reached.
    assert v1["start"]["initial_val_loss"] > 3 * v1["best_val_loss"]

    second = retrain_series(sm, spec)  # the same data: the warm start begins exactly where v1 ended
    v2 = lineage(sm, second.version)
    assert v2["start"]["kind"] == "warm" and v2["start"]["from_version"] == 1 and v2["start"]["streak"] == 1
    assert v2["start"]["initial_val_loss"] == pytest.approx(v1["best_val_loss"], rel=1e-5)
    assert v2["best_val_loss"] <= v2["start"]["initial_val_loss"]  # epoch 0 counts: never worse than the start
    assert v2["epochs_run"] <= spec.model.warm_epochs
    assert second.start is not None and second.start["kind"] == "warm"


def rejected_v1(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    """A series whose only version, v1, lost to a baseline: lr 1e-9 leaves it a random network."""
    spec = settings_for(tmp_path, TINY.replace("epochs = 25", "epochs = 3") + ", lr = 1e-9").series[0]
    push(sm, spec, sine(700))
    first = retrain_series(sm, spec)
    assert first.status == "rejected", first.reason


def test_with_no_champion_a_retrain_starts_warm_from_the_latest_version(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    # Nothing is promoted; the next retrain still starts from v1's weights and forms, not from random ones.
    rejected_v1(tmp_path, sm)
    v1 = lineage(sm, 1)
    assert v1["start"]["why"] == "no version to start from" and v1["start"]["cold_lost"] is True
    with write_session(sm) as session:  # as a version stored before `cold_lost` existed: read off its metrics
        mv = session.scalar(select(ModelVersion).where(ModelVersion.version == 1))
        assert mv is not None
        mv.lineage = {**mv.lineage, "start": {k: x for k, x in mv.lineage["start"].items() if k != "cold_lost"}}
    second = retrain_series(sm, settings_for(tmp_path).series[0])
    # A few warm epochs from a random network do not beat seasonal naive on a sine; v1 lost too: no cold.
    assert second.status == "rejected" and "so none follows" in second.reason, second.reason
    v2 = lineage(sm, second.version)
    assert v2["start"]["kind"] == "warm" and v2["start"]["from_version"] == 1
    assert v2["start"]["initial_val_loss"] == pytest.approx(v1["best_val_loss"], rel=1e-5)
    with sm() as session:
        assert session.scalar(select(ModelVersion).where(ModelVersion.version == 3)) is None


def test_an_unreadable_latest_version_means_a_cold_start_not_a_failed_retrain(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    rejected_v1(tmp_path, sm)  # no champion: a retrain would start from v1
    with write_session(sm) as session:
        mv = session.scalar(select(ModelVersion).where(ModelVersion.version == 1))
        assert mv is not None
        mv.weights = b"not safetensors"
    again = retrain_series(sm, settings_for(tmp_path).series[0])
    assert again.status in ("promoted", "rejected"), again.reason
    assert lineage(sm, again.version)["start"]["why"] == "no version to start from"


def test_cold_asked_for_starts_from_random_weights_through_a_job_run(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path)
    spec = s.series[0]
    push(sm, spec, sine(700))
    retrain_series(sm, spec)
    queue = InProcessQueue(sm, s)
    run = start_run(sm, s, queue, kind="train", cold=True, trigger="api")
    assert run.cold
    ended = wait_for(lambda: (r := get_run(sm, run.id)).finished_at and r, timeout_s=120)
    assert ended.status == "ok" and ended.cold
    v2 = lineage(sm, 2)
    assert v2["start"]["kind"] == "cold" and v2["start"]["why"] == "a cold retrain was asked for"
    assert v2["start"]["initial_val_loss"] > 3 * lineage(sm, 1)["best_val_loss"]


def test_a_warm_retrain_fine_tunes_on_the_most_recent_warm_windows_and_a_cold_one_on_all(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    # Greensboro's hourly temperatures (bundled, real): a cold version learns every window, the warm
    # retrain after a day's new values goes over the newest 200 only, and the lineage says how many.
    frame = pd.read_csv(SNAPSHOTS / "greensboro_temp_hourly.csv")
    values = frame["value"].to_numpy(dtype=float)[:1500]
    s = settings_for(tmp_path, TINY + ", warm_windows = 200")
    spec = s.series[0]
    push(sm, spec, values[:1476])
    first = retrain_series(sm, spec)
    v1 = lineage(sm, first.version)
    assert v1["start"]["kind"] == "cold" and v1["epoch_windows"] == v1["train_windows"] > 1000
    push(sm, spec, values[1476:], start=1476)
    second = retrain_series(sm, spec)
    v2 = lineage(sm, second.version)
    assert v2["start"]["kind"] == "warm", v2["start"]
    assert v2["epoch_windows"] == 200 and v2["train_windows"] > v1["train_windows"]

    from forecaster.modelling.preparation import prepare

    with sm() as session:
        from forecaster.store.observations import load_values
        from forecaster.store.series import find_series

        series = find_series(session, spec.key)
        assert series is not None
        ts, vals = load_values(session, series.id)
    prep = prepare(ts, vals, frequency="1h", spec=spec.model, horizon=spec.steps)
    warm = dataclasses.replace(prep, init={"any": "weights"}).splits()
    assert np.array_equal(warm.y_train, prep.y_train[-200:]) and np.array_equal(warm.x_val, prep.x_val)
    assert len(prep.splits().y_train) == len(prep.y_train)  # cold: every window


def test_after_cold_every_warm_versions_the_next_retrain_is_cold(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path, TINY + ", cold_every = 1")
    spec = s.series[0]
    push(sm, spec, sine(700))
    kinds = []
    for _ in range(3):
        r = retrain_series(sm, spec)
        assert r.status == "promoted" or "champion" in r.reason, r.reason
        kinds.append(lineage(sm, r.version)["start"])
    assert [k["kind"] for k in kinds] == ["cold", "warm", "cold"]
    assert "cold_every 1" in kinds[2]["why"]


def test_a_warm_version_that_loses_to_a_baseline_is_followed_by_a_cold_one_unless_the_last_cold_lost_too(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path)
    spec = s.series[0]
    push(sm, spec, sine(700))
    assert retrain_series(sm, spec).status == "promoted"
    # The series turns into a wide random walk, and the warm start may barely move (lr 1e-9): the
    # champion's sine-shaped network loses to naive on the new holdout.
    walk = 20 + np.cumsum(np.random.default_rng(1).normal(0, 4, 400))
    push(sm, spec, walk, start=700)
    s2 = settings_for(tmp_path, TINY.replace("epochs = 25", "epochs = 3") + ", lr = 1e-9, warm_epochs = 1")
    report = retrain_series(sm, s2.series[0])
    warm, cold = lineage(sm, 2), lineage(sm, 3)
    assert warm["start"]["kind"] == "warm" and warm["start"]["from_version"] == 1
    with sm() as session:
        v2 = session.scalar(select(ModelVersion).where(ModelVersion.version == 2))
        assert v2 is not None and v2.status == "rejected" and v2.status_reason.endswith("a cold retrain follows")
    assert cold["start"]["kind"] == "cold" and cold["start"]["why"] == "warm v2 lost to a baseline at the gate"
    assert report.version == 3 and report.start is not None and report.start["kind"] == "cold"
    assert report.status == "rejected" and cold["start"]["cold_lost"] is True  # lr 1e-9: it cannot learn either

    # The next warm loss is not followed by another cold retrain: the last cold one lost too.
    again = retrain_series(sm, s2.series[0])
    assert again.version == 4 and again.start is not None and again.start["kind"] == "warm"
    assert again.status == "rejected" and ("the last cold retrain lost to a baseline too, so none follows "
                                           "(the retrain after 13 more warm ones is cold: cold_every 14)") \
        in again.reason, again.reason
    assert again.start["cold_lost"] is True and again.start["streak"] == 1
    with sm() as session:
        assert session.scalar(select(ModelVersion).where(ModelVersion.version == 5)) is None


def test_the_train_command_with_cold_trains_from_scratch_and_the_table_says_so(tmp_path: Path) -> None:
    from forecaster.usecases.database import move_schema, open_database

    s = settings_for(tmp_path)
    cfg = tmp_path / "forecaster.toml"
    engine, own = open_database(s.database_url)
    move_schema(engine, "head")
    push(own, s.series[0], sine(700))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300, env={
                                  "COLUMNS": "250", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run("train")
    assert "warm v1" in run("train").stdout
    cold = run("train", "--cold").stdout
    assert "cold" in cold and "warm v" not in cold, cold
    assert lineage(own, 3)["start"]["why"] == "a cold retrain was asked for"
    engine.dispose()


def test_statistical_candidates_refit_warm_keep_the_stored_form() -> None:
    frame = pd.read_csv(SNAPSHOTS / "nino12_sst_monthly.csv")
    y = frame["value"].to_numpy(dtype=float)
    for name in ("ets_seasonal", "arima", "theta", "sarima"):
        first = cands.fit_one(name, y, len(y) - 60, 12)
        warm = cands.fit_one(name, y, len(y) - 12, 12, keep=first.to_dict())
        assert warm.form == first.form, name
        forecasts, nxt = cands.run(warm, y, len(y) - 11)
        assert np.isfinite(forecasts).all() and math.isfinite(nxt)
        assert np.mean(np.abs(forecasts - y[len(y) - 11 :])) < 2 * np.mean(np.abs(np.diff(y)))


def test_a_fleet_member_started_warm_begins_at_its_champions_loss_beside_a_cold_one() -> None:
    import dataclasses

    from forecaster.config.settings import ModelSpec
    from forecaster.modelling.fitting import fit_many, fit_one
    from forecaster.modelling.preparation import prepare

    ts = pd.date_range("2024-01-01", periods=700, freq="1h", tz="UTC")
    prep = prepare(ts, sine(700), frequency="1h", horizon=6,
                   spec=ModelSpec(hidden_size=16, window=24, epochs=25, candidates=()))
    model, alone = fit_one(prep)
    warm = dataclasses.replace(prep, init={k: v.clone() for k, v in model.state_dict().items()}, warm_from=1)
    (_, w, w_err), (_, c, c_err) = fit_many([warm, prep])
    assert w_err is None and c_err is None and w is not None and c is not None
    assert w.epochs_run <= prep.spec.warm_epochs < c.epochs_run
    assert w.best_val_loss <= alone.best_val_loss * (1 + 1e-4)  # never worse than where it started
