from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.store import registry
from forecaster.store.tables import Alias, ModelVersion, Series, make_engine, make_sessionmaker, write_session
from forecaster.errors import Conflict, ModelNotFound, SeriesNotFound

METRICS = {"model": {"mae": 1.0, "rmse": 1.0, "mase": 0.8, "smape": 1.0}, "naive": {"mae": 1.2, "rmse": 1, "mase": 1.0, "smape": 1},
           "seasonal_naive": None, "champion": None, "interval": {"level": 0.9, "halfwidth": 1.0, "coverage": 0.9}}


def add_versions(sm: sessionmaker[Session], n: int, key: str = "sine:a") -> None:
    with write_session(sm) as s:
        series = Series(key=key, source="sine", params={}, frequency="1h")
        s.add(series)
        s.flush()
        for _ in range(n):
            registry.add_version(s, series, hyperparameters={"cell": "lstm"}, scaler={}, weights=b"w",
                                 metrics=METRICS, lineage={}, status="candidate", status_reason="")


def champions(sm: sessionmaker[Session]) -> tuple[list[int], list[int]]:
    with sm() as s:
        aliased = s.scalars(select(ModelVersion.version).join(Alias, Alias.model_version_id == ModelVersion.id)).all()
        flagged = s.scalars(select(ModelVersion.version).where(ModelVersion.status == "champion")).all()
    return list(aliased), list(flagged)


def test_versions_are_numbered_per_series(sm: sessionmaker[Session]) -> None:
    add_versions(sm, 3)
    add_versions(sm, 2, key="sine:b")
    with sm() as s:
        assert [v.version for v in registry.list_versions(s, series_key="sine:a")] == [3, 2, 1]
        assert [v.version for v in registry.list_versions(s, series_key="sine:b")] == [2, 1]


def test_promote_then_rollback_moves_the_alias_back_and_forth(sm: sessionmaker[Session]) -> None:
    add_versions(sm, 3)
    for v in (1, 3):
        with write_session(sm) as s:
            registry.promote(s, series_key="sine:a", version=v)
    assert champions(sm) == ([3], [3])
    with write_session(sm) as s:
        back = registry.rollback(s, series_key="sine:a")
    assert (back.version, back.previous_version) == (1, 3)
    assert champions(sm) == ([1], [1])
    with sm() as s:
        statuses = {v.version: v.status for v in registry.list_versions(s, series_key="sine:a")}
    assert statuses == {1: "champion", 2: "candidate", 3: "rejected"}
    with write_session(sm) as s:  # before v1, the baseline served: one more rollback returns to it
        back = registry.rollback(s, series_key="sine:a")
    assert (back.version, back.previous_version, back.baseline) == (None, 1, True)
    assert champions(sm) == ([], [])
    with pytest.raises(Conflict, match="served by its baseline and nothing served before it"), write_session(sm) as s:
        registry.rollback(s, series_key="sine:a")
    assert champions(sm) == ([], [])  # the failed rollback changed nothing


def test_a_version_the_gate_rejected_serves_only_with_force_and_the_answer_says_why(
        sm: sessionmaker[Session]) -> None:
    add_versions(sm, 1)
    with write_session(sm) as s:
        series = s.scalar(select(Series).where(Series.key == "sine:a"))
        assert series is not None
        registry.add_version(s, series, hyperparameters={"cell": "lstm"}, scaler={}, weights=b"w",
                             metrics={**METRICS, "model": {**METRICS["model"], "mase": 1.25}}, lineage={},
                             status="rejected", status_reason="gate")
    with pytest.raises(Conflict, match=r"sine:a v2 was rejected by the gate \(model MASE 1.250 does not beat "
                                       r"naive 1.000\).*force"), write_session(sm) as s:
        registry.promote(s, series_key="sine:a", version=2)
    assert champions(sm) == ([], [])
    with write_session(sm) as s:
        forced = registry.promote(s, series_key="sine:a", version=2, force=True)
    assert (forced.version, forced.forced, forced.gate_passed) == (2, True, False)
    assert forced.gate_reason == "model MASE 1.250 does not beat naive 1.000"
    with write_session(sm) as s:
        fine = registry.promote(s, series_key="sine:a", version=1)
    assert (fine.forced, fine.gate_passed, fine.previous_version) == (False, True, 2)


def test_the_baseline_can_be_chosen_and_a_rollback_returns_to_it_or_from_it(sm: sessionmaker[Session]) -> None:
    add_versions(sm, 2)
    with write_session(sm) as s:
        registry.promote(s, series_key="sine:a", version=2)
    with write_session(sm) as s:
        on_baseline = registry.serve_baseline(s, series_key="sine:a")
    assert (on_baseline.baseline, on_baseline.previous_version, on_baseline.changed) == (True, 2, True)
    assert champions(sm) == ([], [])
    with write_session(sm) as s:
        again = registry.serve_baseline(s, series_key="sine:a")
    assert again.changed is False
    with write_session(sm) as s:
        back = registry.promote(s, series_key="sine:a", version=1)
    assert back.previous_version is None  # the baseline served before
    with write_session(sm) as s:
        undone = registry.rollback(s, series_key="sine:a")
    assert (undone.baseline, undone.previous_version) == (True, 1)
    with write_session(sm) as s:
        undone = registry.rollback(s, series_key="sine:a")
    assert (undone.version, undone.previous_version) == (2, None)  # back from the baseline to v2
    assert champions(sm) == ([2], [2])


def test_unknown_series_and_version_are_named(sm: sessionmaker[Session]) -> None:
    add_versions(sm, 2)
    with pytest.raises(ModelNotFound, match=r"sine:a has no version 9 \(versions: 1, 2\)"), write_session(sm) as s:
        registry.promote(s, series_key="sine:a", version=9)
    with pytest.raises(SeriesNotFound, match="'nope'"), write_session(sm) as s:
        registry.promote(s, series_key="nope", version=1)


def test_concurrent_promotions_end_with_exactly_one_champion(sm: sessionmaker[Session]) -> None:
    add_versions(sm, 6)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def promote(v: int) -> None:
        try:
            barrier.wait()
            with write_session(sm) as s:
                registry.promote(s, series_key="sine:a", version=v)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    aliased, flagged = champions(sm)
    assert len(aliased) == 1 and flagged == aliased


def test_cli_promote_needs_force_for_a_rejected_version_and_baseline_and_rollback_move_the_forecast(
        tmp_path: Path, sqlite_api_db: str) -> None:
    import subprocess
    import sys

    from tests.api_server import TRAINED

    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "{sqlite_api_db}"\n')
    engine = make_engine(sqlite_api_db)
    with write_session(make_sessionmaker(engine)) as s:  # v3: v2's weights, a losing MASE
        series = s.scalar(select(Series).where(Series.key == TRAINED))
        assert series is not None
        v2 = s.scalars(select(ModelVersion).where(ModelVersion.series_id == series.id, ModelVersion.version == 2)).one()
        registry.add_version(s, series, hyperparameters=v2.hyperparameters, scaler=v2.scaler, weights=v2.weights,
                             metrics={**{k: m for k, m in v2.metrics.items() if k != "served"},  # judged by the model alone
                                      "model": {**v2.metrics["model"], "mase": 5.0, "mase_folds": [5.0] * 4}},
                             lineage=v2.lineage, status="rejected", status_reason="gate")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)

    refused = run("promote", TRAINED, "3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{TRAINED} v3 was rejected by the gate (model MASE 5.000 does not beat naive" in refused.stderr
    assert "--force" in refused.stderr
    forced = run("promote", TRAINED, "3", "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"{TRAINED}: champion is now v3 (was v2); stored forecast for ")
    assert "gate rejected it: model MASE 5.000" in forced.stderr and "served anyway (--force)" in forced.stderr
    on_baseline = run("baseline", TRAINED)
    assert on_baseline.returncode == 0, on_baseline.stderr
    assert on_baseline.stdout.startswith(f"{TRAINED}: the baseline serves now (was v3)")
    assert "naive)" in on_baseline.stdout  # the stored forecast is the baseline's
    back = run("rollback", TRAINED)
    assert back.returncode == 0 and back.stdout.startswith(f"{TRAINED}: rolled back from the baseline to v3")
    from forecaster.usecases.forecasting import get_forecast

    with make_sessionmaker(engine)() as s:
        assert get_forecast(s, series_key=TRAINED).model_version == 3
    engine.dispose()
