from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from forecaster import registry
from forecaster.db import Alias, ModelVersion, Series, write_session
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
    with pytest.raises(Conflict, match="no earlier champion"), write_session(sm) as s:
        registry.rollback(s, series_key="sine:a")
    assert champions(sm) == ([1], [1])  # the failed rollback changed nothing


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
