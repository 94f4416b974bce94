"""Warm against cold retrains, side by side in one run (issue 19's benchmark).

    nice -n 10 .venv/bin/python bench/retrain.py month [--days 30] [--series a,b] [--out ...]
    nice -n 10 .venv/bin/python bench/retrain.py many [--count 200] [--points 2000] [--workers 1,2] [--ways warm,cold]
        [--keep-base F | --base F]

``month``: for each public series of ../shared/data (ANCHORS.md), the last D days of actuals are
held back; one cold version is trained on the rest, then the days are appended one at a time
(hourly series: 24 values a day; trading-day series: one per business day; weekly and monthly
series: one per period that ends in the stretch) and after each the series is retrained twice,
through the service's own ``retrain_series`` on two SQLite databases that started equal: warm
(the default) in one, ``cold=True`` in the other. Reported per series: wall time per retrain
each way, their ratio, and the holdout MASE of what serves after each retrain (the new version
when promoted, else the champion re-scored on the same holdout, else the baseline fallback).
That holdout also chose what serves (the gate), so it flatters whoever tries more different
models; the table adds the honest figure: the stored path that served after each retrain,
scored on the actuals that arrive next (next-day MASE, the same scale), as a user saw it.

``many``: ``count`` series of ``points`` hourly values (slices of the public hourly series), each
trained cold once, then one more day appended and retrained warm and cold; in one process and
in ``workers`` processes sharing the series. Series per hour each way, and the projection
to 1,000 series.

Torch uses 1 intra-op thread per process (as a worker beside others does). Writes JSON and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
SERIES = {  # name -> (frequency, values appended per retrain, calendar days per retrain)
    "greensboro_temp_hourly": ("1h", 24, 1),
    "miami_ghi_hourly": ("1h", 24, 1),
    "wti_daily_spot": ("1B", 1, 1),
    "sp500_daily_close": ("1B", 1, 1),
    "us_gasoline_weekly": ("W-MON", 1, 7),
    "nino12_sst_monthly": ("1MS", 1, 30),
}


def _load(name: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / f"{name}.csv")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame[["ts", "value"]]


def _settings(tmp: Path, blocks: list[str]) -> Any:
    from forecaster.config.loading import load_settings

    cfg = tmp / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp}/warm.db"\n' + "".join(f"\n[[series]]\n{b}\n" for b in blocks),
                   encoding="utf-8")
    return load_settings(str(cfg))


def _block(key: str, frequency: str, model_keys: dict[str, Any] | None = None) -> str:
    model = ("model = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in model_keys.items()) + " }\n"
             if model_keys else "")
    return f'key = "{key}"\nsource = "push"\nfrequency = "{frequency}"\n' + model


def _append(sm: Any, spec: Any, frame: pd.DataFrame) -> None:
    from forecaster.store.observations import upsert
    from forecaster.store.series import sync_series
    from forecaster.store.tables import write_session

    with write_session(sm) as session:
        upsert(session, sync_series(session, spec), frame.reset_index(drop=True))


def _served_mase(report: Any, method: str | None) -> float | None:
    """Holdout MASE of what serves after this retrain; ``method`` is the stored forecast's, which names
    the baseline that serves when no version does (the better of naive and seasonal naive on the
    recent values: ``baseline.baseline_path``)."""
    m = report.metrics
    if not m:
        return None
    if report.status == "promoted":
        return float((m.get("served") or m["model"])["mase"])
    if m.get("champion"):
        return float(m["champion"]["mase"])
    fallback = m.get(method) if method in ("naive", "seasonal_naive") else None
    return float((fallback or m["naive"])["mase"])


def _open(path: Path) -> tuple[Any, Any]:
    from forecaster.usecases.database import move_schema, open_database

    engine, sm = open_database(f"sqlite:///{path}")
    move_schema(engine, "head")
    return engine, sm


def month(days: int, names: list[str], model_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    from forecaster.usecases.retrain import load_training, retrain_series

    torch.set_num_threads(1)
    load_training()
    out: dict[str, Any] = {}
    for name in names:
        frequency, per, every = SERIES[name]
        retrains = max(1, days // every)
        frame = _load(name)
        held = (retrains + 1) * per  # one more chunk: the last retrain's forecasts are scored too
        base, rest = frame.iloc[:-held], frame.iloc[-held:]
        scale = float(np.mean(np.abs(np.diff(base["value"].to_numpy(dtype=float)))))  # one-step naive MAE
        served: dict[str, dict[pd.Timestamp, float]] = {"warm": {}, "cold": {}}  # the stored path, by target
        with tempfile.TemporaryDirectory() as t:
            tmp = Path(t)
            settings = _settings(tmp, [_block(name, frequency, model_keys)])
            spec = settings.series[0]
            e_w, sm_w = _open(tmp / "warm.db")
            _append(sm_w, spec, base)
            t0 = time.perf_counter()
            first = retrain_series(sm_w, spec, cold=True)
            first_s = time.perf_counter() - t0
            e_w.dispose()
            shutil.copy(tmp / "warm.db", tmp / "cold.db")
            e_w, sm_w = _open(tmp / "warm.db")
            e_c, sm_c = _open(tmp / "cold.db")
            rows = []
            for i in range(retrains + 1):
                chunk = rest.iloc[i * per : (i + 1) * per]
                if rows:  # what served since the last retrain, scored on the actuals that just arrived
                    for way in ("warm", "cold"):
                        errs = [abs(served[way][t] - y) for t, y in zip(chunk["ts"], chunk["value"], strict=True)
                                if t in served[way]]
                        rows[-1][way]["next_mase"] = float(np.mean(errs)) / scale if errs else None
                if i == retrains:
                    break
                row: dict[str, Any] = {"through": chunk["ts"].iloc[-1].isoformat()}
                for way, sm in (("warm", sm_w), ("cold", sm_c)):
                    _append(sm, spec, chunk)
                    t0 = time.perf_counter()
                    r = retrain_series(sm, spec, cold=way == "cold")
                    s = round(time.perf_counter() - t0, 2)
                    method, served[way] = _served_path(sm, spec.key)
                    row[way] = {"s": s, "status": r.status, "start": _start_kind(sm, r),
                                "served_mase": _served_mase(r, method), "method": method, "reason": r.reason}
                rows.append(row)
                print(f"{name} {i + 1}/{retrains}: warm {row['warm']['s']:.1f}s {row['warm']['start']} "
                      f"{row['warm']['status']} {row['warm']['served_mase']}, cold {row['cold']['s']:.1f}s "
                      f"{row['cold']['status']} {row['cold']['served_mase']}", flush=True)
            e_w.dispose()
            e_c.dispose()
        out[name] = {"frequency": frequency, "points": len(frame), "retrains": retrains,
                     "first_cold_s": round(first_s, 2), "first_status": first.status, "days": rows,
                     **_summary(rows)}
    return out


def _served_path(sm: Any, key: str) -> tuple[str, dict[pd.Timestamp, float]]:
    """What serves now: its method, and its stored forecast path by target timestamp."""
    from forecaster.usecases.forecasting import get_forecast

    with sm() as session:
        f = get_forecast(session, series_key=key)
    points = f.path or []
    return f.method, {pd.Timestamp(p.target_ts): float(p.value) for p in points}


def _start_kind(sm: Any, report: Any) -> str:
    """warm / cold / warm>cold (a warm version lost to a baseline and a cold one followed)."""
    from forecaster.store.tables import ModelVersion

    if report.model_version_id is None:
        return "-"
    with sm() as session:
        mv = session.get(ModelVersion, report.model_version_id)
        start = (mv.lineage or {}).get("start") or {}
    kind = str(start.get("kind", "?"))
    return "warm>cold" if kind == "cold" and "warm v" in str(start.get("why", "")) else kind


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    warm_s = [r["warm"]["s"] for r in rows]
    cold_s = [r["cold"]["s"] for r in rows]
    pairs = [(r["warm"]["served_mase"], r["cold"]["served_mase"]) for r in rows
             if r["warm"]["served_mase"] is not None and r["cold"]["served_mase"] is not None]
    worse = [w / c for w, c in pairs if c > 0]
    nxt = [(r["warm"].get("next_mase"), r["cold"].get("next_mase")) for r in rows]
    nxt = [(w, c) for w, c in nxt if w is not None and c is not None]
    return {
        "warm_next_mase": round(statistics.fmean(p[0] for p in nxt), 4) if nxt else None,
        "cold_next_mase": round(statistics.fmean(p[1] for p in nxt), 4) if nxt else None,
        "warm_mean_s": round(statistics.fmean(warm_s), 2), "cold_mean_s": round(statistics.fmean(cold_s), 2),
        "time_ratio": round(sum(warm_s) / sum(cold_s), 3),
        "warm_mean_mase": round(statistics.fmean(p[0] for p in pairs), 4) if pairs else None,
        "cold_mean_mase": round(statistics.fmean(p[1] for p in pairs), 4) if pairs else None,
        "worst_day_ratio": round(max(worse), 3) if worse else None,
        "warm_starts": sum(r["warm"]["start"] == "warm" for r in rows),
        "cold_after_warm": sum(r["warm"]["start"] == "warm>cold" for r in rows),
    }


def print_month(report: dict[str, Any]) -> None:
    print(f"\n{'series':<24} {'n':>3} {'warm s':>7} {'cold s':>7} {'ratio':>6} {'warm MASE':>9} {'cold MASE':>9} "
          f"{'mean w/c':>8} {'worst day':>9} {'warm/>cold':>10} {'next warm':>9} {'next cold':>9}")
    for name, r in report["series"].items():
        mean = r["warm_mean_mase"] / r["cold_mean_mase"] if r["cold_mean_mase"] else float("nan")
        print(f"{name:<24} {r['retrains']:>3} {r['warm_mean_s']:>7.2f} {r['cold_mean_s']:>7.2f} "
              f"{r['time_ratio']:>6.3f} {r['warm_mean_mase']:>9.4f} {r['cold_mean_mase']:>9.4f} {mean:>8.3f} "
              f"{r['worst_day_ratio']:>9.3f} {r['warm_starts']:>4}/{r['cold_after_warm']:<4} "
              f"{r['warm_next_mase'] or float('nan'):>9.4f} {r['cold_next_mase'] or float('nan'):>9.4f}")


# ---------------------------------------------------------------- many series


def _slices(count: int, points: int) -> list[pd.DataFrame]:
    """``count`` slices of ``points`` + 24 hourly values from the public hourly series, evenly spread."""
    sources = [_load(n) for n in ("greensboro_temp_hourly", "miami_ghi_hourly", "sf_temp_hourly")]
    out = []
    for i in range(count):
        frame = sources[i % len(sources)]
        room = len(frame) - points - 24
        start = (i // len(sources)) * 997 % max(1, room)
        out.append(frame.iloc[start : start + points + 24].reset_index(drop=True))
    return out


def _many_worker(args: tuple[str, list[int], bool]) -> list[dict[str, Any]]:
    db, indices, cold = args
    import torch

    from forecaster.config.settings import SeriesSpec
    from forecaster.usecases.retrain import load_training, retrain_series

    torch.set_num_threads(1)
    load_training()
    _, sm = _open(Path(db))
    out = []
    for i in indices:
        spec = SeriesSpec(key=f"slice{i:04d}", source="push", frequency="1h")
        t0 = time.perf_counter()
        r = retrain_series(sm, spec, cold=cold)
        out.append({"i": i, "s": time.perf_counter() - t0, "status": r.status})
    return out


def many(count: int, points: int, workers: list[int], ways: tuple[str, ...] = ("warm", "cold"),
         save: Callable[[dict[str, Any]], None] | None = None, base: Path | None = None,
         keep_base: Path | None = None) -> dict[str, Any]:
    from forecaster.config.settings import SeriesSpec

    out: dict[str, Any] = {"count": count, "points": points, "runs": {}}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if base is not None:  # a starting database kept by an earlier run (--keep-base): no setup
            shutil.copy(base, tmp / "base.db")
            out["base"] = str(base)
        else:
            frames = _slices(count, points)
            _, sm = _open(tmp / "base.db")
            for i, frame in enumerate(frames):
                _append(sm, SeriesSpec(key=f"slice{i:04d}", source="push", frequency="1h"), frame.iloc[:points])
            t0 = time.perf_counter()  # the first versions, cold, in two processes (the first trains)
            with mp.get_context("spawn").Pool(2) as pool:
                pool.map(_many_worker, [(str(tmp / "base.db"), list(range(k, count, 2)), True) for k in range(2)])
            out["setup_s"] = round(time.perf_counter() - t0, 1)
            for i, frame in enumerate(frames):  # one more day of actuals for every series
                _append(sm, SeriesSpec(key=f"slice{i:04d}", source="push", frequency="1h"), frame.iloc[points:])
            if keep_base is not None:
                shutil.copy(tmp / "base.db", keep_base)
        for way in ways:  # warm for every worker count first: the figure the goal is about
            for w in workers:
                db = tmp / f"{way}-{w}.db"
                shutil.copy(tmp / "base.db", db)
                t0 = time.perf_counter()
                with mp.get_context("spawn").Pool(w) as pool:
                    parts = pool.map(_many_worker, [(str(db), list(range(k, count, w)), way == "cold")
                                                    for k in range(w)])
                wall = time.perf_counter() - t0
                per = [x for p in parts for x in p]
                statuses: dict[str, int] = {}
                for x in per:
                    statuses[x["status"]] = statuses.get(x["status"], 0) + 1
                out["runs"][f"{way}-{w}"] = {
                    "workers": w, "way": way, "wall_s": round(wall, 1), "series_per_hour": round(count / wall * 3600),
                    "hours_for_1000": round(1000 / (count / wall * 3600), 2), "statuses": statuses,
                    "mean_s_per_series": round(statistics.fmean(x["s"] for x in per), 2)}
                print(f"{way} x{w}: {wall:.0f}s for {count} series = {count / wall * 3600:.0f}/h {statuses}",
                      flush=True)
                if save is not None:  # each run as it ends: a long run stopped early keeps what it measured
                    save(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("month")
    m.add_argument("--days", type=int, default=30)
    m.add_argument("--series", default=",".join(SERIES))
    m.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrain-month.json"))
    m.add_argument("--model", default="{}", help='model overrides as JSON, e.g. \'{"cold_every": 7}\' (default: none)')
    y = sub.add_parser("many")
    y.add_argument("--count", type=int, default=200)
    y.add_argument("--points", type=int, default=2000)
    y.add_argument("--workers", default="1,2")
    y.add_argument("--ways", default="warm,cold", help="warm, cold or both, in that order")
    y.add_argument("--keep-base", type=Path, default=None, help="save the trained starting database here")
    y.add_argument("--base", type=Path, default=None, help="start from a database --keep-base saved (no setup)")
    y.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrain-many.json"))
    args = ap.parse_args()
    head = {"command": " ".join(["bench/retrain.py", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0], "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}
    t0 = time.perf_counter()
    if args.what == "month":
        overrides = json.loads(args.model)
        report = {**head, "days": args.days, "model": overrides,
                  "series": month(args.days, [s for s in args.series.split(",") if s], overrides)}
        print_month(report)
    else:
        def save(part: dict[str, Any]) -> None:
            Path(args.out).write_text(json.dumps({**head, **part, "partial": True}, indent=2) + "\n")

        report = {**head, **many(args.count, args.points, [int(w) for w in args.workers.split(",")],
                                 tuple(w for w in args.ways.split(",") if w), save, args.base, args.keep_base)}
    report["total_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
