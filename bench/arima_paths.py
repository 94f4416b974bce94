"""ARIMA paths at rolling origins: one Kalman filter pass (``candidates.run_paths``) against a fresh
statsforecast ``forward`` at each origin, on the public series of ../shared/data.

    nice -n 5 .venv/bin/python bench/arima_paths.py

Per series: AutoARIMA fitted (the service's way, ``candidates.fit_one``) on the values before the last 300,
paths of 12 steps at every 3rd origin after it; seconds each way (best of 3), their ratio, and the largest
difference between the two. Prints a table; writes nothing.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.modelling import candidates  # noqa: E402

SERIES = {"nino12_sst_monthly": 12, "wti_daily_spot": None, "us_gasoline_weekly": None, "miami_ghi_hourly": None,
          "greensboro_temp_hourly": None, "sp500_daily_close": None}


def best_of(fn, k: int = 3) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(k):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out  # type: ignore[return-value]


def main() -> None:
    warnings.simplefilter("ignore")
    data = ROOT.parent / "shared" / "data"
    print("| series | form | origins | forward per origin s | one pass s | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name, season in SERIES.items():
        v = pd.read_csv(data / f"{name}.csv")["value"].to_numpy(np.float64)
        stop = len(v) - 300
        f = candidates.fit_one("arima", v, stop, season)
        at = np.arange(stop, len(v) - 12, 3)
        model = candidates._restore(f)
        slow_s, slow = best_of(lambda: np.array([model.forward(y=v[f.fit_start:o], h=12)["mean"] for o in at]))
        fast_s, fast = best_of(lambda: candidates.run_paths(f, v, at, 12))
        print(f"| {name} | {f.form} | {len(at)} | {slow_s:.3f} | {fast_s:.3f} | {slow_s / fast_s:.1f}x | "
              f"{float(np.max(np.abs(slow - fast))):.1e} |", flush=True)


if __name__ == "__main__":
    main()
