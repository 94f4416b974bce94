"""Forecast quality on the public tuning series, under the ANCHORS.md protocol.

For each series in ../shared/data/ANCHORS.md: holdout = last min(round(0.2 n), 500)
values; the product trains on the train part exactly as the service does
(``modelling.train_series``: its own validation and holdout inside the train part,
the ladder choosing the serving candidate on validation), then the holdout is
walked one step at a time with everything frozen: the recurrent model's weights,
the statistical candidates' fitted filters, the selection, and the served
candidate's ACI interval updated with each actual as it arrives. MASE divides by
the train part's one-step naive MAE, as in ANCHORS.md.

Usage:
    nice -n 10 .venv/bin/python bench/quality.py [--data ../shared/data] [--series a,b] [--epochs 60]
        [--out bench/results/quality.json]

Prints a table and writes the report (JSON). Torch runs with 1 intra-op thread, as
the peers did. The machine is shared: the load average at start is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.modelling import candidates as cands  # noqa: E402
from forecaster.config.settings import ModelSpec  # noqa: E402
from forecaster.modelling.intervals import ACIState, coverage_of, walk  # noqa: E402
from forecaster.modelling.fitting import train_series  # noqa: E402

# series -> (service frequency, best peer name, best peer MASE, naive MASE, seasonal?) from ANCHORS.md
SERIES = {
    "greensboro_temp_hourly": ("1h", "plain PyTorch LSTM", 0.770, 0.929, True),
    "miami_ghi_hourly": ("1h", "neuralforecast LSTM", 0.359, 0.757, True),
    "wti_daily_spot": ("1B", "statsforecast AutoETS(m=1)", 1.073, 1.075, False),
    "sp500_daily_close": ("1B", "statsforecast AutoETS(m=1)", 1.270, 1.273, False),
    "us_gasoline_weekly": ("W-MON", "statsforecast AutoETS(m=1)", 0.880, 0.983, True),
    "nino12_sst_monthly": ("1MS", "statsforecast AutoARIMA(m=12)", 0.392, 1.020, True),
}
SEASON = {"greensboro_temp_hourly": 24, "miami_ghi_hourly": 24, "us_gasoline_weekly": 52, "nino12_sst_monthly": 12}


def load(data: Path, name: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    df = pd.read_csv(data / f"{name}.csv")
    return pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True)), df["value"].to_numpy(np.float64)


def served_holdout(out: object, ts: pd.DatetimeIndex, v: np.ndarray, start: int, frequency: str) -> dict[str, np.ndarray]:
    """Each serving member's frozen one-step forecasts of v[start:]."""
    from forecaster.calendar.frequency import season_length

    serving = out.hyperparameters["serving"]  # type: ignore[attr-defined]
    parts = {}
    for m in serving["members"]:
        if m == "model":
            parts[m] = out.predictor.predict_rolling(ts, v, start, len(v))  # type: ignore[attr-defined]
        elif m == "naive":
            parts[m] = v[start - 1 : -1]
        elif m == "seasonal_naive":
            s = season_length(frequency) or 1
            parts[m] = v[start - s : len(v) - s]
        else:
            parts[m] = cands.run(cands.Fitted.from_dict(serving["fitted"][m]), v, start)[0]
    return parts


def one(data: Path, name: str, epochs: int, overrides: dict[str, object]) -> dict[str, object]:
    frequency, peer, peer_mase, naive_mase_anchor, seasonal = SERIES[name]
    ts, v = load(data, name)
    n = len(v)
    h = min(round(0.2 * n), 500)
    n_train = n - h
    scale = float(np.mean(np.abs(np.diff(v[:n_train]))))
    t0 = time.perf_counter()
    out = train_series(ts[:n_train], v[:n_train], frequency=frequency, spec=ModelSpec(epochs=epochs, **overrides))
    train_s = time.perf_counter() - t0
    y = v[n_train:]
    model_fc = out.predictor.predict_rolling(ts, v, n_train, n)
    parts = served_holdout(out, ts, v, n_train, frequency)
    served_fc = np.mean(list(parts.values()), axis=0)
    state = ACIState.from_dict(out.metrics["served_interval"]["aci"])
    widths, end = walk(state, y - served_fc)
    season = SEASON.get(name)
    snaive = float(np.mean(np.abs(y - v[n_train - season : n - season])) / scale) if season else None
    m = out.metrics
    row = {
        "series": name, "frequency": frequency, "n": n, "holdout": h,
        "served": m["served"]["label"], "served_method": m["served"]["method"],
        "served_mase": float(np.mean(np.abs(y - served_fc)) / scale),
        "recurrent_mase": float(np.mean(np.abs(y - model_fc)) / scale),
        "naive_mase": float(np.mean(np.abs(y - v[n_train - 1 : -1])) / scale),
        "seasonal_naive_mase": snaive,
        "best_peer": peer, "best_peer_mase": peer_mase,
        "coverage_90": coverage_of(y - served_fc, widths),
        "interval_halfwidth_first_last": [float(widths[0]), float(widths[-1])],
        "train_s": round(train_s, 1), "lstm_s": round(float(out.lineage["duration_s"]), 1),
        "epochs_run": out.lineage["epochs_run"],
        "candidates_internal": {k: (b.get("failed") or {"form": b.get("form"), "val_mase": round(b["val"]["mase"], 4),
                                                         "internal_holdout_mase": round(b["holdout"]["mase"], 4),
                                                         "fit_s": b.get("fit_s")})
                                for k, b in m["candidates"].items()},
        "selection_val_mae": m["selection"]["tried_val_mae"],
        "aci_end_alpha": end.alpha_t,
    }
    every = {"model": model_fc, "naive": v[n_train - 1 : -1]}
    if season:
        every["seasonal_naive"] = v[n_train - season : n - season]
    for k, d in out.hyperparameters["serving"]["fitted"].items():
        every[k] = cands.run(cands.Fitted.from_dict(d), v, n_train)[0]
    row["every_candidate_mase"] = {k: round(float(np.mean(np.abs(y - f)) / scale), 4) for k, f in every.items()}
    if os.environ.get("QUALITY_DUMP"):  # forecasts for offline analysis of selection rules
        np.savez(Path(os.environ["QUALITY_DUMP"]) / f"{name}.npz", y=y, scale=scale, **every)
    row["served_le_peer"] = row["served_mase"] <= peer_mase
    row["served_vs_naive"] = row["served_mase"] / row["naive_mase"] - 1
    row["recurrent_within_5pct_of_peer"] = row["recurrent_mase"] <= 1.05 * peer_mase
    row["recurrent_beats_snaive"] = (row["recurrent_mase"] < snaive) if snaive is not None else None
    row["coverage_ok"] = 0.85 <= row["coverage_90"] <= 0.95
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--series", default=",".join(SERIES))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--spec", default="{}", help='ModelSpec overrides as JSON, e.g. \'{"hidden_size": 64}\'')
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # statsforecast's convergence chatter
    load_avg = os.getloadavg()
    rows, t0 = [], time.perf_counter()
    for name in args.series.split(","):
        row = one(args.data, name, args.epochs, json.loads(args.spec))
        rows.append(row)
        print(f"{name:24s} served {row['served_mase']:.3f} ({row['served']}) recurrent {row['recurrent_mase']:.3f} "
              f"peer {row['best_peer_mase']:.3f} naive {row['naive_mase']:.3f} "
              f"cov {row['coverage_90']:.3f} train {row['train_s']:.0f}s", flush=True)
    total = time.perf_counter() - t0
    goals = {
        "served_le_peer": sum(r["served_le_peer"] for r in rows),
        "served_never_2pct_worse_than_naive": all(r["served_vs_naive"] <= 0.02 for r in rows),
        "recurrent_beats_snaive_on_seasonal": all(r["recurrent_beats_snaive"] for r in rows
                                                  if r["recurrent_beats_snaive"] is not None),
        "recurrent_within_5pct_of_peer": sum(r["recurrent_within_5pct_of_peer"] for r in rows),
        "coverage_85_95_all": all(r["coverage_ok"] for r in rows),
        "total_train_s": round(sum(r["train_s"] for r in rows), 1),
    }
    report = {"protocol": "ANCHORS.md: holdout min(round(0.2n),500), one-step rolling origin, no refit",
              "epochs": args.epochs, "spec_overrides": json.loads(args.spec), "torch_threads": 1, "cpu_count": os.cpu_count(),
              "load_average_at_start": load_avg, "python": platform.python_version(),
              "total_s": round(total, 1), "goals": goals, "series": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(goals))


if __name__ == "__main__":
    main()
