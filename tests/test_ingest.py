from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from forecaster.config.loading import load_settings
from forecaster.config.settings import Settings
from forecaster.store.tables import Forecast, IngestRun, Observation, Series, write_session
from forecaster.store.series import find_series
from forecaster.usecases.ingest import ingest_many, ingest_series
from tests.fakes import FakeYahoo

UTC = dt.timezone.utc


def settings_for(tmp_path: Path, body: str) -> Settings:
    path = tmp_path / "forecaster.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path / "unused.db"}"\n' + body)
    return load_settings(path)


def count_obs(sm: sessionmaker[Session], key: str) -> int:
    with sm() as s:
        series = find_series(s, key)
        return 0 if series is None else s.scalar(
            select(func.count()).select_from(Observation).where(Observation.series_id == series.id))


SINE = '[[series]]\nkey = "sine:a"\nsource = "sine"\nfrequency = "1h"\nparams = { length = 300, seed = 3 }\n'


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("when,load\n" + "".join(f"{t},{v}\n" for t, v in rows))


CSV = '[[series]]\nkey = "csv:plant"\nsource = "csv"\nfrequency = "1h"\nparams = { path = "load.csv", time_column = "when", value_column = "load" }\n'


def test_second_ingest_adds_nothing(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path, SINE)
    first = ingest_series(sm, s, s.series[0])
    second = ingest_series(sm, s, s.series[0])
    assert (first.status, first.rows_new) == ("ok", 300)
    assert (second.rows_new, second.rows_updated, second.rows_unchanged) == (0, 0, 300)
    assert count_obs(sm, "sine:a") == 300
    with sm() as session:
        runs = session.scalars(select(IngestRun).order_by(IngestRun.id)).all()
    assert [(r.status, r.rows_new, r.rows_unchanged) for r in runs] == [("ok", 300, 0), ("ok", 0, 300)]
    assert all(r.finished_at is not None and r.finished_at >= r.started_at for r in runs)


def test_corrected_value_is_updated_and_nothing_is_ever_deleted(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    rows = [(f"2024-03-01T{h:02d}:00:00Z", f"{10 + h}.5") for h in range(6)]
    write_csv(tmp_path / "load.csv", rows)
    s = settings_for(tmp_path, CSV)
    assert ingest_series(sm, s, s.series[0]).rows_new == 6
    # upstream corrects hour 2, drops hours 0-1, adds hour 6
    corrected = [(t, "99.0" if i == 2 else v) for i, (t, v) in enumerate(rows)][2:] + [("2024-03-01T06:00:00Z", "16.5")]
    write_csv(tmp_path / "load.csv", corrected)
    out = ingest_series(sm, s, s.series[0])
    assert (out.rows_new, out.rows_updated, out.rows_unchanged) == (1, 1, 3)
    assert count_obs(sm, "csv:plant") == 7
    with sm() as session:
        value = session.scalar(select(Observation.value).where(Observation.ts == dt.datetime(2024, 3, 1, 2, tzinfo=UTC)))
    assert value == 99.0


def test_nan_duplicate_and_unordered_rows_are_cleaned_with_a_reason(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    write_csv(tmp_path / "load.csv", [
        ("2024-03-01T03:00:00Z", "4"), ("2024-03-01T01:00:00Z", "2"), ("2024-03-01T02:00:00Z", "nan"),
        ("2024-03-01T01:00:00Z", "2.5"), ("2024-03-01T04:00:00Z", "inf"), ("2024-03-01T00:00:00Z", "1"),
    ])
    s = settings_for(tmp_path, CSV)
    out = ingest_series(sm, s, s.series[0])
    assert out.status == "ok"
    assert out.rows_new == 3 and out.rows_rejected == 3
    assert any("nan" in n.lower() or "inf" in n.lower() for n in out.notes)
    with sm() as session:
        stored = session.execute(select(Observation.ts, Observation.value).order_by(Observation.ts)).all()
    assert [(t.hour, v) for t, v in stored] == [(0, 1.0), (1, 2.5), (3, 4.0)]


def test_failure_half_way_leaves_the_series_as_it_was(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path, SINE)
    ingest_series(sm, s, s.series[0])
    longer = s.series[0].model_copy(update={"params": {"length": 400, "seed": 3}})

    def explode(session: Session, series: Series) -> None:
        raise RuntimeError("disk full")

    out = ingest_series(sm, s, longer, after_write=explode)
    assert out.status == "failed" and "disk full" in (out.error or "")
    assert count_obs(sm, "sine:a") == 300  # the 100 new rows were rolled back with the failure
    with sm() as session:
        run = session.get(IngestRun, out.run_id)
    assert run is not None and run.status == "failed" and "disk full" in (run.error or "")


def test_unreachable_source_is_unavailable_alone_and_the_others_go_on(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    body = ('[sources.open-meteo]\nforecast_url = "http://127.0.0.1:1/v1/forecast"\n'
            'archive_url = "http://127.0.0.1:1/v1/archive"\n'
            '[[series]]\nkey = "open-meteo:sf:t"\nsource = "open-meteo"\nfrequency = "1h"\n'
            'params = { latitude = 37.77, longitude = -122.42, variable = "temperature_2m" }\n' + SINE)
    s = settings_for(tmp_path, body)
    outs = ingest_many(sm, s, s.series)
    assert [o.status for o in outs] == ["unavailable", "ok"]
    assert "127.0.0.1" in (outs[0].error or "") and "the stored data keeps serving" in (outs[0].error or "")
    assert count_obs(sm, "sine:a") == 300 and count_obs(sm, "open-meteo:sf:t") == 0


def test_unreachable_source_falls_back_to_the_bundled_snapshot_when_asked(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    body = ('[sources.open-meteo]\nforecast_url = "http://127.0.0.1:1/v1/forecast"\n'
            'archive_url = "http://127.0.0.1:1/v1/archive"\n'
            '[[series]]\nkey = "open-meteo:sf:t"\nsource = "open-meteo"\nfrequency = "1h"\nsnapshot = "sf_temp_hourly"\n'
            'params = { latitude = 37.77, longitude = -122.42, variable = "temperature_2m" }\n')
    s = settings_for(tmp_path, body)
    out = ingest_series(sm, s, s.series[0], snapshot_fallback=True)
    assert out.status == "snapshot"
    assert out.rows_new == 8759
    assert any("snapshot" in n for n in out.notes)
    assert out.last_ts == dt.datetime(2010, 12, 31, 23, tzinfo=UTC)


def test_arriving_actuals_are_filled_into_stored_forecasts(tmp_path: Path, sm: sessionmaker[Session]) -> None:
    rows = [(f"2024-03-01T{h:02d}:00:00Z", str(h)) for h in range(3)]
    write_csv(tmp_path / "load.csv", rows)
    s = settings_for(tmp_path, CSV)
    ingest_series(sm, s, s.series[0])
    with write_session(sm) as session:
        series = find_series(session, "csv:plant")
        assert series is not None
        session.add(Forecast(series_id=series.id, method="naive", target_ts=dt.datetime(2024, 3, 1, 3, tzinfo=UTC),
                             value=2.0))
    write_csv(tmp_path / "load.csv", rows + [("2024-03-01T03:00:00Z", "3.5")])
    ingest_series(sm, s, s.series[0])
    with sm() as session:
        f = session.scalars(select(Forecast)).one()
    assert (f.actual, f.error) == (3.5, 1.5)


def test_cli_ingest_prints_a_summary_per_series_and_is_idempotent(tmp_path: Path) -> None:
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n' + SINE)
    run = lambda *a: subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path, timeout=120)
    not_migrated = run("ingest")
    assert not_migrated.returncode == 2 and "forecaster migrate" in not_migrated.stderr
    assert run("migrate").returncode == 0
    first, second = run("ingest"), run("ingest")
    assert first.returncode == 0, first.stderr
    assert "sine:a" in first.stdout and "300" in first.stdout
    line = next(ln for ln in second.stdout.splitlines() if "sine:a" in ln)
    assert [c.strip() for c in line.split("│")][2:6] == ["ok", "0", "0", "300"]
    unknown = run("ingest", "--series", "nope:x")
    assert unknown.returncode == 2 and "'nope:x'" in unknown.stderr and "sine:a" in unknown.stderr


# ---------------------------------------------------------------- validation and outages


DOWN_OM = ('[sources.open-meteo]\nforecast_url = "http://127.0.0.1:1/v1/forecast"\n'
           'archive_url = "http://127.0.0.1:1/v1/archive"\n'
           '[[series]]\nkey = "open-meteo:sf:t"\nsource = "open-meteo"\nfrequency = "1h"\nsnapshot = "sf_temp_hourly"\n'
           'params = { latitude = 37.77, longitude = -122.42, variable = "temperature_2m" }\n')


def test_bad_rows_in_a_source_answer_are_rejected_one_by_one_and_the_rest_stored(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    rows = [(f"2024-03-01T{h:02d}:00:00Z", str(h)) for h in range(5)]
    write_csv(tmp_path / "load.csv", rows + [("2999-01-01T00:00:00Z", "0.4"), ("2024-03-01T05:17:00Z", "5")])
    s = settings_for(tmp_path, CSV)
    out = ingest_series(sm, s, s.series[0])
    assert (out.status, out.rows_new, out.rows_rejected) == ("ok", 5, 2)
    assert count_obs(sm, "csv:plant") == 5
    note = next(n for n in out.notes if n.startswith("rejected 2 rows"))
    assert "ts=2999-01-01T00:00:00Z (value=0.4): ts 2999-01-01T00:00:00Z is in the future" in note
    assert "ts=2024-03-01T05:17:00Z (value=5): is off the series' calendar" in note
    with sm() as session:
        run = session.get(IngestRun, out.run_id)
    assert run is not None and (run.status, run.rows_rejected, run.error) == ("ok", 2, note)


def test_cli_ingest_table_counts_and_names_a_rejected_row(tmp_path: Path) -> None:
    write_csv(tmp_path / "load.csv", [("2024-03-01T00:00:00Z", "1"), ("2024-03-01T00:17:00Z", "2"),
                                      ("2024-03-01T01:00:00Z", "3")])
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n' + CSV)
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)

    assert run("migrate").returncode == 0
    out = run("ingest")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "csv:plant" in ln)
    assert [c.strip() for c in line.split("│")][2:7] == ["ok", "2", "0", "0", "1"]
    note = " ".join(ln.split("│")[-2].strip() for ln in out.stdout.splitlines() if ln.count("│") > 2)  # wrapped cell
    assert "rejected 1 row that breaks the series' rules: csv row ts=2024-03-01T00:17:00Z" in note


YAHOO = ('[sources.yfinance]\nbase_url = "{url}"\n'
         '[[series]]\nkey = "yfinance:^GSPC:close"\nsource = "yfinance"\nfrequency = "1B"\n'
         'params = {{ ticker = "^GSPC" }}\n')


def test_a_yahoo_row_on_a_closed_day_is_rejected_and_the_series_keeps_ingesting(
        tmp_path: Path, sm: sessionmaker[Session], fake_yahoo: FakeYahoo,
        caplog: pytest.LogCaptureFixture) -> None:
    # Christmas 2018: XNYS was closed, yet the answer holds a (provisional) bar for it
    christmas = pd.DataFrame({"date": [dt.date(2018, 12, 25)], "close": [2400.0], "adjclose": [2400.0]})
    fake_yahoo.bars = pd.concat([fake_yahoo.bars, christmas]).sort_values("date").reset_index(drop=True)
    s = settings_for(tmp_path, YAHOO.format(url=fake_yahoo.url))
    with caplog.at_level(logging.WARNING):
        first = ingest_series(sm, s, s.series[0])
    assert (first.status, first.rows_new, first.rows_rejected) == ("ok", 300, 1), first.error
    named = "ts=2018-12-25T00:00:00Z (value=2400): is off the series' calendar: 1B follows the XNYS trading days"
    assert any(named in n for n in first.notes)
    assert any(r.levelno == logging.WARNING and named in r.getMessage() for r in caplog.records)
    second = ingest_series(sm, s, s.series[0])
    assert (second.status, second.rows_new, second.rows_unchanged, second.rows_rejected) == ("ok", 0, 300, 1)
    with sm() as session:
        runs = session.execute(select(IngestRun.status, IngestRun.rows_rejected).order_by(IngestRun.id)).all()
        christmas_stored = session.scalar(select(func.count()).select_from(Observation)
                                          .where(Observation.ts == dt.datetime(2018, 12, 25, tzinfo=UTC)))
    assert [tuple(r) for r in runs] == [("ok", 1), ("ok", 1)] and christmas_stored == 0


def test_an_unreachable_source_with_stored_data_is_unavailable_not_a_snapshot_reload(
        tmp_path: Path, sm: sessionmaker[Session]) -> None:
    s = settings_for(tmp_path, DOWN_OM)
    first = ingest_series(sm, s, s.series[0], snapshot_fallback=True)
    assert first.status == "snapshot" and first.error is not None and "bundled snapshot 'sf_temp_hourly'" in first.error
    second = ingest_series(sm, s, s.series[0], snapshot_fallback=True)
    assert (second.status, second.rows_new, second.last_ts) == ("unavailable", 0, first.last_ts)
    assert second.error is not None and second.error.endswith("the stored data keeps serving")
    with sm() as session:
        runs = session.execute(select(IngestRun.status, IngestRun.error).order_by(IngestRun.id)).all()
    assert [(st, err) for st, err in runs] == [("snapshot", first.error), ("unavailable", second.error)]


def test_cli_ingest_says_unavailable_and_the_log_file_follows(tmp_path: Path) -> None:
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\nsnapshot_fallback = false\n'
                   + DOWN_OM.replace('snapshot = "sf_temp_hourly"\n', "") + SINE)
    log = tmp_path / "logs" / "forecaster.log"
    run = lambda *a: subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run("migrate").returncode == 0
    out = run("--log-file", str(log), "ingest")
    assert out.returncode == 0, out.stderr  # an outage upstream is not a failure here
    line = next(ln for ln in out.stdout.splitlines() if "open-meteo:sf:t" in ln)
    assert "unavailable" in line
    assert "open-meteo:sf:t: unavailable: source unreachable (" in out.stdout.replace("\n", " ")
    lines = log.read_text().splitlines()
    pattern = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) [a-z_]+\.[a-z_.]+( |$)"
    assert lines and all(pd.Series(lines).str.match(pattern)), lines
    assert any(ln.split()[1:3] == ["WARNING", "ingest.unavailable"] and "series=open-meteo:sf:t" in ln for ln in lines)
    assert any(" INFO ingest.done series=sine:a " in ln for ln in lines)


def test_stored_timestamps_and_their_aggregates_come_back_aware_utc(
        sm: sessionmaker[Session], tmp_path: Path) -> None:
    from forecaster.store import observations

    settings = settings_for(tmp_path, SINE)
    ingest_series(sm, settings, settings.series[0])
    with sm() as s:
        series = find_series(s, "sine:a")
        assert series is not None
        ts, _ = observations.load_values(s, series.id)
        first, last = observations.first_ts(s, series.id), observations.latest_ts(s, series.id)
        newest = dict(observations.newest_by_key(s))["sine:a"]
        stats = observations.stats(s)[series.id]
    # min/max come back through the column's type: aware, comparable with what was read row by row
    assert first == ts[0].to_pydatetime() and first.tzinfo == UTC
    assert last == newest == stats.last_ts == ts[-1].to_pydatetime() and last.tzinfo == UTC
    assert stats.count == len(ts) == 300
