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

Paths (``--horizon [H]``; H defaults to the service frequency's ``default_horizon``): the
ANCHORS.md section "Paths: h steps ahead". Origins o = n_train, n_train + s, ... <= n - h with
s = max(1, (holdout - h) // 60); at each origin every method forecasts y[o .. o+h-1] from y[:o].
The bench runs the peers itself (naive, seasonal naive, statsforecast AutoETS(m=1), seasonal
AutoETS, AutoTheta, AutoARIMA(approximation=True) and the mean of ETS/Theta/ARIMA, each fitted
once on the train part's last <= 4000 values and run forward frozen) beside the product:
``train_series(..., horizon=h)`` on the train part, then at each origin the served path (its
members frozen and averaged), the recurrent model's path alone, every stored candidate's path
(for the selection regret) and the served per-step ACI interval walked over the origins with
delayed feedback. Writes bench/results/quality-paths.json and .md:

    nice -n 10 .venv/bin/python bench/quality.py --horizon
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
from forecaster.modelling.selection import Choice  # noqa: E402

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


# ---------------------------------------------------------------- paths (--horizon)

PEER_FIT = 4000  # statsforecast peers fit on the train part's last <= 4000 values (ANCHORS.md, Paths)
PEER_LABELS = {
    "naive": "naive", "seasonal_naive": "seasonal naive", "ets": "AutoETS(m=1)",
    "ets_seasonal": "seasonal AutoETS", "theta": "AutoTheta", "arima": "AutoARIMA",
    "mean": "mean of ETS, Theta, ARIMA",
}
# ANCHORS.md "Paths" table: naive, seasonal naive, AutoETS, seasonal AutoETS, AutoTheta, AutoARIMA, mean
ANCHOR_PATHS = {
    "greensboro_temp_hourly": (24, 69, [4.578, 4.739, 4.578, 4.578, 3.479, 3.698, 3.365]),
    "miami_ghi_hourly": (24, 69, [2.848, 0.429, 2.848, 0.459, 0.991, 0.377, 0.535]),
    "wti_daily_spot": (5, 62, [1.980, None, 1.980, None, 1.979, 1.979, 1.979]),
    "sp500_daily_close": (5, 62, [2.209, None, 2.214, None, 2.205, 2.216, 2.209]),
    "us_gasoline_weekly": (13, 65, [1.315, 1.295, 1.179, 1.040, 0.936, 1.074, 0.935]),
    "nino12_sst_monthly": (12, 68, [2.477, 0.955, 2.477, 0.837, 0.851, 0.708, 0.769]),
}
PEER_ORDER = ("naive", "seasonal_naive", "ets", "ets_seasonal", "theta", "arima", "mean")


def bench_origins(n: int, n_train: int, h: int) -> np.ndarray:
    """ANCHORS.md paths: o = n_train, n_train + s, ... <= n - h, s = max(1, (holdout - h) // 60)."""
    s = max(1, (n - n_train - h) // 60)
    return np.arange(n_train, n - h + 1, s, dtype=np.int64)


def peer_paths(v: np.ndarray, n_train: int, at: np.ndarray, h: int,
               season: int | None) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]]]:
    """The peers' paths (len(at), h) at origins ``at``: statsforecast fitted once on
    v[max(0, n_train - 4000):n_train] and run forward (``forward(y=v[fit_start:o], h=h)``) frozen."""
    from forecaster.modelling import paths

    cands._numba_cache()
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta

    m = season or 1
    out: dict[str, np.ndarray] = {"naive": paths.naive_paths(v, at, h)}
    info: dict[str, dict[str, object]] = {}
    if season:
        out["seasonal_naive"] = paths.seasonal_naive_paths(v, at, h, season)
    models = {"ets": lambda: AutoETS(season_length=1), "theta": lambda: AutoTheta(season_length=m),
              "arima": lambda: AutoARIMA(season_length=m, approximation=True)}
    if season:
        models["ets_seasonal"] = lambda: AutoETS(season_length=m)
    fit_start = max(0, n_train - PEER_FIT)
    for name, make in models.items():
        t0 = time.perf_counter()
        model = make()
        model.fit(v[fit_start:n_train])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out[name] = np.stack([np.asarray(model.forward(y=v[fit_start:o], h=h)["mean"], dtype=np.float64)
                              for o in at])
        info[name] = {"form": cands._form(model), "fit_s": round(fit_s, 2),
                      "forward_s": round(time.perf_counter() - t0, 2)}
    out["mean"] = np.mean([out["ets_seasonal" if season else "ets"], out["theta"], out["arima"]], axis=0)
    return {k: out[k] for k in PEER_ORDER if k in out}, info


def product_paths(out: object, ts: pd.DatetimeIndex, v: np.ndarray, at: np.ndarray, h: int,
                  frequency: str) -> dict[str, np.ndarray]:
    """Every product candidate's paths at origins ``at``, frozen: the recurrent model, naive, seasonal
    naive (the service's season) and each stored statistical candidate (``hp["serving"]["fitted"]``)."""
    from forecaster.calendar.frequency import season_length
    from forecaster.modelling import paths

    season = season_length(frequency)
    every = {"model": out.predictor.predict_rolling_paths(ts, v, at),  # type: ignore[attr-defined]
             "naive": paths.naive_paths(v, at, h)}
    if season and season > 1 and int(at[0]) >= season:
        every["seasonal_naive"] = paths.seasonal_naive_paths(v, at, h, season)
    for k, d in out.hyperparameters["serving"]["fitted"].items():  # type: ignore[attr-defined]
        every[k] = cands.run_paths(cands.Fitted.from_dict(d), v, at, h)
    return every


def every_dense(out: object, v: np.ndarray, at: np.ndarray, h: int, member: str) -> np.ndarray:
    """A baseline member's paths at origins ``at`` (the statistical ones go through ``champion_served``)."""
    from forecaster.modelling import paths

    if member == "naive":
        return paths.naive_paths(v, at, h)
    raise ValueError(f"cannot re-run member {member} densely")


def one_paths(data: Path, name: str, epochs: int, overrides: dict[str, object],
              horizon: int | None) -> dict[str, object]:
    """One series under the ANCHORS.md paths protocol: peers and product side by side."""
    from forecaster.calendar.frequency import default_horizon, season_length
    from forecaster.modelling import paths
    from forecaster.modelling.fitting import champion_served
    from forecaster.modelling.intervals import walk_paths

    frequency = SERIES[name][0]
    h = horizon or default_horizon(frequency)
    ts, v = load(data, name)
    n = len(v)
    hold = min(round(0.2 * n), 500)
    n_train = n - hold
    scale = float(np.mean(np.abs(np.diff(v[:n_train]))))
    at = bench_origins(n, n_train, h)
    y = paths.actual_paths(v, at, h)
    season = SEASON.get(name)

    t0 = time.perf_counter()
    peers, peer_info = peer_paths(v, n_train, at, h, season)
    peers_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = train_series(ts[:n_train], v[:n_train], frequency=frequency, spec=ModelSpec(epochs=epochs, **overrides),
                       horizon=h)
    train_s = time.perf_counter() - t0
    hp, m = out.hyperparameters, out.metrics
    serving = hp["serving"]
    t0 = time.perf_counter()
    every = product_paths(out, ts, v, at, h, frequency)
    choice = Choice.of(serving)
    served = choice.combine(every)
    # the product's own re-run of its served combination (as the gate runs a champion): must agree
    product_served = champion_served(out.predictor, every["model"], ts, v, at, season_length(frequency))
    served_check = (None if product_served is None
                    else float(np.max(np.abs(product_served - served)) / scale))
    walk_s = time.perf_counter() - t0

    # the served interval: per-step ACI from the stored states, delayed feedback over the bench origins
    steps = serving.get("aci_steps") or [m["served_interval"]["aci"]]
    states = [ACIState.from_dict(d) for d in steps]
    starved, _ = walk_paths(states, at, y - served)
    cov_starved, _ = paths.step_coverage(y - served, starved)
    # As the service runs it: a path is made at every position (each refresh) and each actual updates
    # every step state that targeted it; the intervals are read at the protocol's origins.
    dense = np.arange(int(at[0]), n - h + 1)
    dense_model = out.predictor.predict_rolling_paths(ts, v, dense)
    dense_served = champion_served(out.predictor, dense_model, ts, v, dense, season_length(frequency))
    if dense_served is None:
        dense_served = choice.combine({k: dense_model if k == "model" else every_dense(out, v, dense, h, k)
                                       for k in choice.every})
    dense_widths, _ = walk_paths(states, dense, paths.actual_paths(v, dense, h) - dense_served)
    widths = dense_widths[np.searchsorted(dense, at)]
    cov, cov_steps = paths.step_coverage(y - served, widths)
    # The same intervals at every position, not only the protocol's ~60 origins: ten times the sample
    # (60 origins x h correlated steps leave the coverage figure ~±0.03 of noise).
    cov_dense, cov_dense_steps = paths.step_coverage(paths.actual_paths(v, dense, h) - dense_served, dense_widths)

    def block(f: np.ndarray) -> dict[str, object]:
        b = paths.path_block(y, f, scale)
        return {"mase": b["mase"], "mase_step1": b["mase_steps"][0], "mase_steps": b["mase_steps"],
                "mae": b["mae"]}

    peer_blocks = {k: block(f) for k, f in peers.items()}
    cand_blocks = {k: block(f) for k, f in every.items()}
    served_b, model_b = block(served), cand_blocks["model"]
    best_peer = min(peer_blocks, key=lambda k: peer_blocks[k]["mase"])  # type: ignore[arg-type,return-value]
    best_cand = min(cand_blocks, key=lambda k: cand_blocks[k]["mase"])  # type: ignore[arg-type,return-value]
    best_cand1 = min(cand_blocks, key=lambda k: cand_blocks[k]["mase_step1"])  # type: ignore[arg-type,return-value]
    bp, naive = float(peer_blocks[best_peer]["mase"]), float(peer_blocks["naive"]["mase"])  # type: ignore[arg-type]
    sm = float(served_b["mase"])  # type: ignore[arg-type]
    random_walk = bp >= naive * 0.99
    anchor_h, anchor_n, anchor = ANCHOR_PATHS[name]
    anchors = {k: a for k, a in zip(PEER_ORDER, anchor, strict=True) if a is not None} if anchor_h == h else {}
    row: dict[str, object] = {
        "series": name, "frequency": frequency, "n": n, "holdout": hold, "h": h, "origins": len(at),
        "stride": int(at[1] - at[0]) if len(at) > 1 else None, "season": season, "scale": scale,
        "served": serving["label"], "served_members": serving["members"], "served_first": list(choice.first),
        "served_paths": served_b, "recurrent_paths": model_b,
        "peers": peer_blocks, "peer_forms": peer_info, "peers_s": round(peers_s, 1),
        "anchor_paths": anchors,
        "anchor_max_abs_diff": (max(abs(float(peer_blocks[k]["mase"]) - a) for k, a in anchors.items())  # type: ignore[arg-type]
                                if anchors else None),
        "best_peer": best_peer, "best_peer_mase": bp, "naive_mase": naive,
        "candidates": cand_blocks,
        "candidate_forms": {k: d.get("form") for k, d in serving["fitted"].items()},
        "best_candidate": best_cand, "best_candidate_step1": best_cand1,
        "regret_h": sm / float(cand_blocks[best_cand]["mase"]),  # type: ignore[arg-type]
        "regret_step1": float(served_b["mase_step1"]) / float(cand_blocks[best_cand1]["mase_step1"]),  # type: ignore[arg-type]
        "coverage_90": cov, "coverage_steps": cov_steps,
        "coverage_90_fed_at_origins_only": cov_starved,
        "coverage_90_every_origin": cov_dense, "coverage_steps_every_origin": cov_dense_steps,
        "coverage_worst_step": (int(np.argmax(np.abs(np.asarray(cov_steps) - 0.9))) + 1),
        "halfwidth_first_origin": [float(x) for x in widths[0]],
        "served_check_max_abs_scaled": served_check,
        "train_s": round(train_s, 1), "walk_s": round(walk_s, 1),
        "lstm_s": round(float(out.lineage["duration_s"]), 1), "epochs_run": out.lineage["epochs_run"],
        "internal": {"served_holdout_mase": m["served"]["mase"], "model_holdout_mase": m["model"]["mase"],
                     "origins": out.lineage["origins"], "selection_val_mae": m["selection"]["tried_val_mae"],
                     "selection_val_holdout_mae": m["selection"].get("tried_val_holdout_mae"),
                     "holdout_folds": m["served"]["holdout_folds"],
                     # what validation alone chose (the holdout's first fold), had it served the walk
                     "validation_choice": m["served"]["holdout_folds"][0]["label"],
                     "validation_choice_walk": block(Choice.of(m["served"]["holdout_folds"][0]).combine(every)),
                     "failed": {k: b["failed"] for k, b in m["candidates"].items() if "failed" in b}},
    }
    row["goal_served_le_peer"] = sm <= bp or (random_walk and sm <= bp * 1.005)
    row["random_walk_rule"] = random_walk
    row["goal_regret"] = row["regret_h"] <= 1.03 and row["regret_step1"] <= 1.03  # type: ignore[operator]
    snaive = peer_blocks.get("seasonal_naive")
    row["goal_recurrent_beats_snaive"] = (float(model_b["mase"]) < float(snaive["mase"])  # type: ignore[arg-type]
                                          if snaive is not None else None)
    row["goal_coverage"] = 0.85 <= cov <= 0.95 and all(0.80 <= c <= 0.97 for c in cov_steps)
    return row


SHORT = {"greensboro_temp_hourly": "greensboro", "miami_ghi_hourly": "miami", "wti_daily_spot": "wti",
         "sp500_daily_close": "sp500", "us_gasoline_weekly": "gasoline", "nino12_sst_monthly": "nino12"}


def f3(x: object) -> str:
    return "—" if x is None else f"{float(x):.3f}"  # type: ignore[arg-type]


def paths_markdown(report: dict[str, object]) -> str:
    rows: list[dict] = report["series"]  # type: ignore[assignment,type-arg]
    g: dict = report["goals"]  # type: ignore[assignment,type-arg]
    L = ["# Forecast paths on the public tuning series (`bench/quality.py --horizon`)", "",
         f"Command: `{report['command']}`; epochs {report['epochs']}, torch 1 thread, "
         f"load average at start {', '.join(f'{x:.2f}' for x in report['load_average_at_start'])}, "  # type: ignore[attr-defined]
         f"total {report['total_s']} s. Protocol: {report['protocol']}", "",
         "MASE = mean over origins and steps of |error| / the train part's one-step naive MAE; "
         "\"@1\" is step 1 alone. Peers are run by this bench in the same run; the best of each row is in bold.", "",
         "## MASE at h (mean over steps)", "",
         "| series | h | origins | served | recurrent | naive | seasonal naive | AutoETS | seasonal AutoETS "
         "| AutoTheta | AutoARIMA | mean ETS/Theta/ARIMA | best peer |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["peers"]
        vals = [r["served_paths"]["mase"], r["recurrent_paths"]["mase"]] + [p[k]["mase"] if k in p else None
                                                                            for k in PEER_ORDER]
        best = min(x for x in vals if x is not None)
        cells = [("**" + f3(x) + "**") if x == best else f3(x) for x in vals]
        L.append(f"| {r['series']} | {r['h']} | {r['origins']} | " + " | ".join(cells)
                 + f" | {PEER_LABELS[r['best_peer']]} {f3(r['best_peer_mase'])} |")
    L += ["", "## MASE at step 1", "",
          "| series | served | recurrent | naive | seasonal naive | AutoETS | seasonal AutoETS | AutoTheta "
          "| AutoARIMA | mean ETS/Theta/ARIMA |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["peers"]
        vals = [r["served_paths"]["mase_step1"], r["recurrent_paths"]["mase_step1"]] + [
            p[k]["mase_step1"] if k in p else None for k in PEER_ORDER]
        best = min(x for x in vals if x is not None)
        cells = [("**" + f3(x) + "**") if x == best else f3(x) for x in vals]
        L.append(f"| {r['series']} | " + " | ".join(cells) + " |")
    L += ["", "## The product: what serves, its interval, its cost", "",
          "| series | served | coverage (90 %) | worst step (coverage) | coverage at every origin (worst step) "
          "| regret at h (best candidate) | regret at step 1 (best) | train s | epochs run |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r["coverage_worst_step"]
        ds = r.get("coverage_steps_every_origin") or [float("nan")]
        dw = int(np.argmax(np.abs(np.asarray(ds) - 0.9))) + 1
        L.append(f"| {r['series']} | {r['served']} | {r['coverage_90']:.3f} | {w} ({r['coverage_steps'][w - 1]:.3f}) "
                 f"| {r.get('coverage_90_every_origin', float('nan')):.3f} ({dw}: {ds[dw - 1]:.3f}) "
                 f"| {r['regret_h']:.3f} ({r['best_candidate']}) "
                 f"| {r['regret_step1']:.3f} ({r['best_candidate_step1']}) "
                 f"| {r['train_s']} | {r['epochs_run']} |")
    L += ["", "Product candidates on the bench walk (MASE at h; step 1 in brackets):", ""]
    for r in rows:
        c = r["candidates"]
        L.append(f"- {r['series']}: " + ", ".join(
            f"{k} {c[k]['mase']:.3f} [{c[k]['mase_step1']:.3f}]"
            + (f" {r['candidate_forms'][k]}" if r["candidate_forms"].get(k) else "") for k in c))
    L += ["", "## Goals", "", "| goal | result | pass |", "|---|---|---|"]
    ok = lambda b: "pass" if b else "**fail**"  # noqa: E731
    per = lambda key, fmt: ", ".join(f"{SHORT.get(r['series'], r['series'])} {fmt(r)}" for r in rows)  # noqa: E731
    L.append(f"| served MASE at h ≤ best peer on ≥ 5 of 6 (random walk: within 0.5 %) | "
             f"{g['served_le_peer']} of {len(rows)}: "
             + per("", lambda r: f"{r['served_paths']['mase']:.3f}/{r['best_peer_mase']:.3f}"
                   + ('' if r['goal_served_le_peer'] else ' ✗')) + f" | {ok(g['served_le_peer'] >= 5)} |")
    L.append("| selection regret ≤ 1.03 at h and at step 1, every series | "
             + per("", lambda r: f"{r['regret_h']:.3f}/{r['regret_step1']:.3f}") + f" | {ok(g['regret_all'])} |")
    L.append("| recurrent alone beats seasonal naive at h, every seasonal series | "
             + ", ".join(f"{SHORT.get(r['series'], r['series'])} {r['recurrent_paths']['mase']:.3f}/"
                         f"{r['peers']['seasonal_naive']['mase']:.3f}" for r in rows if "seasonal_naive" in r["peers"])
             + f" | {ok(g['recurrent_beats_snaive_all'])} |")
    L.append("| coverage 85–95 % overall, every step 80–97 % | "
             + per("", lambda r: f"{r['coverage_90']:.3f} "
                   f"[{min(r['coverage_steps']):.2f}..{max(r['coverage_steps']):.2f}]")
             + f" | {ok(g['coverage_all'])} |")
    L += ["", "## Peers against ANCHORS.md (paths table)", "",
          "| series | largest |bench − anchor| MASE | peers off by > 0.005 (bench / anchor) | peer forms (fit s) |",
          "|---|---|---|---|"]
    for r in rows:
        forms = ", ".join(f"{k} {v['form']} ({v['fit_s']})" for k, v in r["peer_forms"].items())
        off = ", ".join(f"{PEER_LABELS[k]} {r['peers'][k]['mase']:.3f} / {a:.3f}" for k, a in r["anchor_paths"].items()
                        if abs(r["peers"][k]["mase"] - a) > 0.005) or "none"
        L.append(f"| {r['series']} | {f3(r['anchor_max_abs_diff'])} | {off} | {forms} |")
    return "\n".join(L) + "\n"


def main_paths(args: argparse.Namespace) -> None:
    load_avg = os.getloadavg()
    horizon = None if args.horizon == "default" else int(args.horizon)
    rows, t0 = [], time.perf_counter()
    for name in args.series.split(","):
        row = one_paths(args.data, name, args.epochs, json.loads(args.spec), horizon)
        rows.append(row)
        s, rc = row["served_paths"], row["recurrent_paths"]
        print(f"{name:24s} h={row['h']} served {s['mase']:.3f} [@1 {s['mase_step1']:.3f}] ({row['served']}) "  # type: ignore[index]
              f"recurrent {rc['mase']:.3f} best peer {row['best_peer']} {row['best_peer_mase']:.3f} "  # type: ignore[index]
              f"naive {row['naive_mase']:.3f} cov {row['coverage_90']:.3f} regret {row['regret_h']:.3f}/"
              f"{row['regret_step1']:.3f} anchors±{f3(row['anchor_max_abs_diff'])} train {row['train_s']:.0f}s",
              flush=True)
    total = time.perf_counter() - t0
    goals = {
        "served_le_peer": sum(bool(r["goal_served_le_peer"]) for r in rows),
        "regret_all": all(r["goal_regret"] for r in rows),
        "recurrent_beats_snaive_all": all(r["goal_recurrent_beats_snaive"] for r in rows
                                          if r["goal_recurrent_beats_snaive"] is not None),
        "coverage_all": all(r["goal_coverage"] for r in rows),
        "total_train_s": round(sum(float(r["train_s"]) for r in rows), 1),  # type: ignore[arg-type]
    }
    report = {"protocol": "ANCHORS.md Paths: holdout min(round(0.2n),500); origins n_train, +s, ... <= n-h, "
                          "s = max(1,(holdout-h)//60); peers fitted on the train part's last <= 4000 values, "
                          "run forward frozen; no refit",
              "command": "nice -n 10 .venv/bin/python bench/quality.py " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "spec_overrides": json.loads(args.spec), "torch_threads": 1,
              "cpu_count": os.cpu_count(), "load_average_at_start": load_avg, "python": platform.python_version(),
              "total_s": round(total, 1), "goals": goals, "series": rows}
    out = args.out or ROOT / "bench" / "results" / "quality-paths.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(paths_markdown(report))
    print(json.dumps(goals))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--series", default=",".join(SERIES))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--spec", default="{}", help='ModelSpec overrides as JSON, e.g. \'{"hidden_size": 64}\'')
    p.add_argument("--out", type=Path, default=None,
                   help="default bench/results/quality.json (paths: quality-paths.json, and .md beside it)")
    p.add_argument("--horizon", nargs="?", const="default", default=None,
                   help="paths of H steps (no H: the service frequency's default horizon); absent: one step")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # statsforecast's convergence chatter
    if args.horizon is not None:
        main_paths(args)
        return
    args.out = args.out or ROOT / "bench" / "results" / "quality.json"
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
