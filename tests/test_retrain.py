"""The retraining service against a real database: versions, gate, stored forecast,
skips and failures that leave the registry as it was, and the CLI around it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.store import registry
from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.store.tables import Forecast, JobRun, ModelVersion, write_session
from forecaster.usecases.forecasting import get_forecast, next_target_ts
from forecaster.store.observations import upsert as upsert_observations
from forecaster.store.series import find_series
from forecaster.usecases.ingest import ingest_series
from forecaster.store.jobruns import create_run
from forecaster.usecases.executor import InProcessQueue
from forecaster.usecases.retrain import retrain_series

SINE = ('[[series]]\nkey = "sine:a"\nsource = "sine"\nfrequency = "1h"\n'
        'params = { length = 600, seed = 4 }\nmodel = { epochs = 40, hidden_size = 16, candidates = [], max_train_points = 4000 }\n')


def settings_for(tmp_path: Path, body: str) -> Settings:
    path = tmp_path / "forecaster.toml"
    path.write_text(body)
    return load_settings(path)


def versions(sm: sessionmaker[Session]) -> int:
    with sm() as s:
        return int(s.scalar(select(func.count()).select_from(ModelVersion)) or 0)


def test_retrain_stores_a_gated_version_and_the_champions_forecast(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path, SINE)
    ingest_series(sm, s, s.series[0])
    first = retrain_series(sm, s.series[0])
    assert (first.status, first.version) == ("promoted", 1), first.reason
    assert first.metrics is not None and first.metrics["model"]["mase"] < first.metrics["naive"]["mase"]
    with sm() as session:
        f = get_forecast(session, series_key="sine:a")
        assert (f.method, f.model_version) == ("model", 1)
        assert f.target_ts == dt.datetime(2024, 1, 26, 0, tzinfo=dt.timezone.utc)  # 600 h after the start
        assert f.lower is not None and f.upper is not None and f.lower < f.value < f.upper
        mv = session.get(ModelVersion, first.model_version_id)
        assert mv is not None and mv.lineage["seed"] == 0 and mv.lineage["device"] == "cpu"
        assert mv.lineage["row_count_total"] == 600 and len(mv.lineage["data_hash"]) == 64
    second = retrain_series(sm, s.series[0])
    assert second.version == 2
    assert second.metrics is not None and second.metrics["champion"] is not None  # v1 re-scored on v2's holdout
    with sm() as session:
        listed = registry.list_versions(session, series_key="sine:a")
        assert sum(v.is_champion for v in listed) == 1


def test_a_series_too_short_is_skipped_saying_how_many_points_it_has_and_needs(
    tmp_path: Path, sm: sessionmaker[Session]
) -> None:
    s = settings_for(tmp_path, SINE.replace("length = 600", "length = 40"))
    ingest_series(sm, s, s.series[0])
    run = create_run(sm, s, kind="train")
    done = InProcessQueue(sm, s).execute(run.id)
    assert versions(sm) == 0
    assert done.status == "ok" and done.progress is not None
    detail = done.progress["results"][0]
    assert detail["status"] == "skipped"
    assert "sine:a" in detail["detail"] and "40 given" in detail["detail"] and "needs at least" in detail["detail"]


def test_a_failed_training_leaves_the_registry_and_the_forecast_as_they_were(
    tmp_path: Path, sm: sessionmaker[Session]
) -> None:
    s = settings_for(tmp_path, SINE)
    ingest_series(sm, s, s.series[0])
    assert retrain_series(sm, s.series[0]).status == "promoted"
    with sm() as session:
        before = get_forecast(session, series_key="sine:a")
    with write_session(sm) as session:  # a flat stretch longer than the whole training range
        series = find_series(session, "sine:a")
        assert series is not None
        ts = pd.date_range("2024-01-26", periods=5000, freq="h", tz="UTC")
        upsert_observations(session, series, pd.DataFrame({"ts": ts, "value": 1.0}))
    report = retrain_series(sm, s.series[0])
    assert report.status == "failed" and "sine:a" in report.reason
    assert versions(sm) == 1
    with sm() as session:
        assert registry.champion_of(session, find_series(session, "sine:a").id).version == 1  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(Forecast)) >= 1
    assert before.model_version == 1


def test_next_target_follows_the_series_calendar() -> None:
    friday = dt.datetime(2024, 3, 8, tzinfo=dt.timezone.utc)
    assert next_target_ts(friday, "1B") == dt.datetime(2024, 3, 11, tzinfo=dt.timezone.utc)
    assert next_target_ts(friday, "1h") == friday + dt.timedelta(hours=1)
    assert next_target_ts(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "1MS") == dt.datetime(
        2024, 2, 1, tzinfo=dt.timezone.utc)


def test_cli_train_list_promote_and_rollback(tmp_path: Path) -> None:
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n' + SINE)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    assert run("migrate").returncode == 0
    assert run("ingest").returncode == 0
    for _ in range(2):
        trained = run("train")
        assert trained.returncode == 0, trained.stderr
    assert "promoted" in trained.stdout or "rejected" in trained.stdout
    listed = run("models", "list", "sine:a")
    assert listed.returncode == 0 and "v1" in listed.stdout and "v2" in listed.stdout
    assert "serves" in listed.stdout  # what each version serves, beside the model's own MASE
    assert run("promote", "sine:a", "1").stdout.strip().startswith("sine:a: champion is now v1")
    assert run("promote", "sine:a", "2", "--force").returncode == 0  # whatever the gate said of v2
    back = run("rollback", "sine:a")
    assert back.returncode == 0 and "rolled back from v2 to v1" in back.stdout
    missing = run("promote", "sine:a", "9")
    assert missing.returncode == 2 and "sine:a has no version 9 (versions: 1, 2)" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_better_baseline_serves_with_a_conformal_interval_from_its_own_errors() -> None:
    import numpy as np

    from forecaster.modelling.scoring import conformal_halfwidth
    from forecaster.usecases.forecasting import baseline_forecast

    rng = np.random.default_rng(0)
    daily = np.tile(np.sin(np.arange(24) / 24 * 2 * np.pi) * 10, 30) + rng.normal(0, 0.1, 720)
    method, value, half = baseline_forecast(daily, "1h")
    assert (method, value) == ("seasonal_naive", daily[-24])
    recent = daily[-500:]
    assert half == conformal_halfwidth(recent[24:] - recent[:-24], 0.9)
    walk = np.cumsum(rng.normal(0, 1, 300))
    method, value, half = baseline_forecast(walk, "1B")
    assert (method, value) == ("naive", walk[-1]) and half is not None and half > 0
    assert baseline_forecast(walk[:3], "1B")[2] is None  # too few errors to calibrate an interval


def test_the_champion_is_rescored_through_what_it_serves_not_its_network(
    tmp_path: Path, sm: sessionmaker[Session]
) -> None:
    """A champion serving AutoETS is the gate's rival as AutoETS: a retrain on the same data that chooses the
    same candidate does not beat it (it used to be compared with the champion's weak network and promoted
    every time); the network's own figure stays beside it."""
    body = SINE.replace("epochs = 40, hidden_size = 16, candidates = []",
                        "epochs = 2, hidden_size = 4, candidates = ['ets_seasonal']")
    s = settings_for(tmp_path, body)
    ingest_series(sm, s, s.series[0])
    first = retrain_series(sm, s.series[0])
    assert first.status == "promoted" and first.metrics is not None, first.reason
    served = first.metrics["served"]
    assert served["method"] == "ets_seasonal", served  # two epochs of a 4-unit network lose to AutoETS on a sine
    second = retrain_series(sm, s.series[0])
    assert second.metrics is not None
    champion, champion_model = second.metrics["champion"], second.metrics["champion_model"]
    assert champion["mase"] == pytest.approx(served["mase"], rel=1e-6)  # v1's AutoETS, frozen, on the same holdout
    assert champion_model["mase"] == pytest.approx(first.metrics["model"]["mase"], rel=1e-6)
    assert champion_model["mase"] > 2 * champion["mase"]
    assert second.status == "rejected" and "champion v1" in second.reason, second.reason
