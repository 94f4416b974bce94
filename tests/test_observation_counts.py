"""The observation count the public pages show is kept by the database (observation_counts): it stays
equal to the stored rows through pushes (new, updated, unchanged rows), an ingest, deletes and a
migration of a database that already holds observations (SQLite and PostgreSQL, real HTTP)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import func, select, text

from forecaster.store import migrate
from forecaster.store.tables import Observation, Series, make_engine, make_sessionmaker
from forecaster.usecases.ingest import ingest_series
from tests.api_server import BASELINE, PUSHED, TRAINED, make_settings, running_api, series_config

HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


def _rows(first: int, n: int, value: float = 1.0) -> list[dict[str, object]]:
    return [{"ts": (T0 + (first + i) * HOUR).isoformat(), "value": value + first + i} for i in range(n)]


def test_listed_counts_follow_push_ingest_and_delete(api_db: str) -> None:
    engine = make_engine(api_db)
    sm = make_sessionmaker(engine)

    def listed() -> dict[str, int]:
        with sm() as session:  # what is stored, beside what the pages say
            stored = dict(session.execute(select(Series.key, func.count(Observation.ts))
                                          .join(Observation, isouter=True).group_by(Series.key)).all())
        shown = {s["key"]: s["observation_count"] for s in api.client.get("/v1/series").json()["series"]}
        assert shown == {k: stored.get(k, 0) for k in shown} and set(stored) <= set(shown), (shown, stored)
        assert api.client.get(f"/v1/series/{PUSHED}").json()["observation_count"] == shown[PUSHED]
        return shown

    with running_api(make_settings(api_db)) as api:
        assert listed() == {TRAINED: 600, BASELINE: 200, PUSHED: 0, "yfinance:^GSPC:close": 0}
        push = f"/v1/series/{PUSHED}/observations"
        assert api.client.post(push, json=_rows(0, 24), headers=api.admin).json()["new"] == 24
        assert listed()[PUSHED] == 24
        # 6 unchanged, 6 with new values, 6 new: only the new ones count.
        again = _rows(12, 6) + [{**r, "value": 50.0} for r in _rows(18, 6)] + _rows(24, 6)
        body = api.client.post(push, json=again, headers=api.admin).json()
        assert (body["new"], body["updated"], body["unchanged"]) == (6, 6, 6)
        assert listed()[PUSHED] == 30
        r = api.client.delete(push, params={"start": (T0 + 5 * HOUR).isoformat(),
                                            "end": (T0 + 9 * HOUR).isoformat()}, headers=api.admin)
        assert r.json()["deleted"] == 5 and listed()[PUSHED] == 25
        r = api.client.delete(push, params={"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"},
                              headers=api.admin)
        assert r.json()["deleted"] == 0 and listed()[PUSHED] == 25
        # An ingest of 50 more steps of the sine series (the first 600 are the same values).
        config = series_config()
        config[0] = {**config[0], "params": {**config[0]["params"], "length": 650}}
        settings = make_settings(api_db, series=config)
        outcome = ingest_series(sm, settings, settings.series[0])
        assert (outcome.status, outcome.rows_new, outcome.rows_unchanged) == ("ok", 50, 600)
        assert listed()[TRAINED] == 650
    engine.dispose()


def test_the_migration_counts_the_rows_already_stored(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO series (id, key, source, params, frequency, created_at) "
                              "VALUES (1, 'a', 'push', '{}', '1h', '2024-01-01'), (2, 'b', 'push', '{}', '1h', '2024-01-01')"))
            stamps = pd.date_range("2024-01-01", periods=40, freq="1h")
            conn.execute(text("INSERT INTO observations (series_id, ts, value, ingested_at) VALUES (1, :ts, 1.0, :ts)"),
                         [{"ts": t.to_pydatetime()} for t in stamps])
        migrate.upgrade(engine)
        with engine.connect() as conn:
            counted = text("SELECT s.key, coalesce(c.observations, 0) FROM series s "
                           "LEFT JOIN observation_counts c ON c.series_id = s.id")
            assert dict(conn.execute(counted).all()) == {"a": 40, "b": 0}
    finally:
        engine.dispose()
