"""Direct multi-horizon head against a recursive roll-out of a one-step model, on the public series.

For each series: the product's preparation (``prepare``) and training (``fit_one``) of two
networks on the same data and seed — one with a head of h outputs (what the service trains),
one with one output rolled forward h times, each forecast fed back as the next input — then
both are run at the holdout's rolling origins (``paths.origins``) and scored with the service's
MASE (the training range's one-step naive MAE), mean over steps and per step. The question the
issue asks: should the roll-out compete as a candidate? Only if it wins on validation; this
reports both stretches.

Usage:
    nice -n 10 .venv/bin/python bench/rollout.py [--epochs 20] [--series a,b] [--out bench/results/rollout.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.calendar.frequency import default_horizon  # noqa: E402
from forecaster.config.settings import ModelSpec  # noqa: E402
from forecaster.modelling import paths  # noqa: E402
from forecaster.modelling.fitting import fit_one  # noqa: E402
from forecaster.modelling.predictor import Predictor  # noqa: E402
from forecaster.modelling.preparation import prepare  # noqa: E402

SERIES = {"greensboro_temp_hourly": "1h", "miami_ghi_hourly": "1h", "sp500_daily_close": "1B",
          "us_gasoline_weekly": "W-MON", "nino12_sst_monthly": "1MS", "wti_daily_spot": "1B"}


def load(data: Path, name: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    df = pd.read_csv(data / f"{name}.csv")
    return pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True)), df["value"].to_numpy(np.float64)


def rollout(pred: Predictor, v: np.ndarray, at: np.ndarray, h: int) -> np.ndarray:
    """(len(at), h): the one-step model fed its own forecasts, h times, from each origin."""
    L = pred.window
    w = np.stack([v[o - L : o] for o in at])  # (B, L)
    out = np.empty((len(at), h))
    for k in range(h):
        out[:, k] = pred.predict(w)
        w = np.concatenate([w[:, 1:], out[:, k : k + 1]], axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--series", default=",".join(SERIES))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rollout.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    report = {"command": " ".join(sys.argv), "epochs": args.epochs, "series": {}}
    for name in args.series.split(","):
        freq = SERIES[name]
        h = default_horizon(freq)
        ts, v = load(args.data, name)
        spec = ModelSpec(epochs=args.epochs, candidates=())
        row: dict[str, object] = {"h": h}
        ph = prepare(ts, v, frequency=freq, spec=spec, horizon=h)  # one set of splits for both networks
        p_val, p_hold = ph.val.start + ph.window, ph.holdout.start + ph.window
        for label, horizon in (("direct", h), ("one_step", 1)):
            t0 = time.perf_counter()
            # The one-step network trains on the same windows, on the first step of each path only.
            prep = ph if horizon > 1 else replace(ph, horizon=1, y_train=np.ascontiguousarray(ph.y_train[:, 0]),
                                                  y_val=np.ascontiguousarray(ph.y_val[:, 0]))
            model, result = fit_one(prep)
            hp = {"format": 1, **prep.model_config().to_dict(), "window": prep.window, "target": spec.target,
                  "calendar_columns": [], "frequency": freq}
            pred = Predictor(hp, prep.scaler, model)
            for stretch, (a, b) in (("val", (p_val, p_hold)), ("holdout", (p_hold, len(v)))):
                at = paths.origins(a, b, h)
                y = paths.actual_paths(v, at, h)
                f = pred.predict_rolling_paths(ts, v, at) if horizon > 1 else rollout(pred, v, at, h)
                block = paths.path_block(y, f, ph.scale)
                row[f"{label}_{stretch}"] = {"mase": round(block["mase"], 4),
                                             "step1": round(block["mase_steps"][0], 4),
                                             "last": round(block["mase_steps"][-1], 4)}
            row[f"{label}_train_s"] = round(time.perf_counter() - t0, 1)
            row[f"{label}_epochs"] = result.epochs_run
        report["series"][name] = row
        print(name, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
