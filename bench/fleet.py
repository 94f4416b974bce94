"""Fleet training benchmark: K series trained as one fleet against the per-series loop, in one run.

    .venv/bin/python bench/fleet.py [--ks 1,16,64,256] [--epochs 4] [--max-one-by-one 64]
                                    [--device cpu|cuda] [--amp] [--quick] [--threads 1] [--out NAME]
    .venv/bin/python bench/fleet.py --e2e 1000 --device cuda [--amp]   # the GPU goal, end to end
    .venv/bin/python bench/fleet.py --micro 16,64,256                  # one training step per model (CPU)

Series of ~2,000 points: non-overlapping slices of the bundled real series
(forecaster/snapshots/, and ../shared/data/ when present: hourly temperatures
and irradiance, daily S&P 500 and WTI) first, then seeded sines (random period,
level, amplitude, noise). Every series is prepared once (``preparation.prepare``:
same window 48, hidden 32, one LSTM layer, batch 64, MAE loss; ``epochs`` with
patience = epochs, so every model runs the same number of epochs and both
paths do the same work). Then, for each K:

- fleet: ``modelling.fit_many`` (one batched pass per step, ``forecaster.modelling.fleet``);
- one by one: ``modelling.fit_one`` per series (nn.LSTM + torch.optim.Adam, ``trainer.fit``),
  measured for K <= ``--max-one-by-one`` and otherwise extrapolated linearly from the
  largest measured K (labelled ``extrapolated``).

Reported per K: wall seconds, windows/s (training windows x epochs / wall), the
speed-up fleet / one-by-one, and peak memory (CPU: the process's peak RSS, reset
before each measurement through /proc/self/clear_refs; CUDA: max_memory_allocated).
Accuracy: the holdout MASE of each real series from the fleet against training it
alone (``modelling.score`` on the same holdout), at the largest K measured both ways.
Prints a table and writes bench/results/<out>.json (default fleet-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.modelling import fitting as modelling  # noqa: E402
from forecaster.modelling.preparation import prepare  # noqa: E402
from forecaster.config.settings import ModelSpec  # noqa: E402

LENGTH = 2000
SHARED = ROOT.parent / "shared" / "data"  # ../shared/data beside the repository, when present
REAL = [  # (file, frequency); the first found of each name is used
    ("sf_temp_hourly.csv", "1h"), ("greensboro_temp_hourly.csv", "1h"), ("miami_ghi_hourly.csv", "1h"),
    ("sp500_daily_close.csv", "1B"), ("wti_daily_spot.csv", "1B"),
]


def real_series() -> list[tuple[str, pd.DatetimeIndex, np.ndarray, str]]:
    """Non-overlapping LENGTH-point slices of the bundled real series."""
    out = []
    for name, freq in REAL:
        for folder in (ROOT / "forecaster" / "snapshots", SHARED):
            path = folder / name
            if path.exists():
                frame = pd.read_csv(path)
                ts = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True))
                v = frame["value"].to_numpy(dtype=np.float64)
                for i, start in enumerate(range(0, len(v) - LENGTH + 1, LENGTH)):
                    out.append((f"{name.removesuffix('.csv')}[{i}]", ts[start : start + LENGTH],
                                v[start : start + LENGTH], freq))
                break
    return out


def sine_series(n: int, seed: int = 0) -> list[tuple[str, pd.DatetimeIndex, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=LENGTH, freq="1h", tz="UTC")
    t = np.arange(LENGTH)
    out = []
    for i in range(n):
        period = rng.uniform(8, 72)
        level, amp = rng.normal(0, 100), rng.uniform(0.5, 50)
        v = level + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3)) + amp * rng.uniform(0.05, 0.3) \
            * rng.normal(size=LENGTH)
        out.append((f"sine[{i}]", ts, v, "1h"))
    return out


def peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux
    except OSError:
        pass


def peak_mb(device: str) -> float | None:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def end_to_end(n: int, epochs: int, device: str, amp: bool) -> dict[str, Any]:
    """N seeded sine series of LENGTH points in a fresh SQLite file, retrained, gated and stored by
    ``retrain_many`` (fleets where they pay): wall time, statuses, device memory."""
    import tempfile
    from collections import Counter

    from forecaster.store import migrate
    from forecaster.config.settings import Settings
    from forecaster.store.tables import make_engine, make_sessionmaker, write_session
    from forecaster.store.observations import upsert as upsert_observations
    from forecaster.store.series import sync_series
    from forecaster.usecases.retrain import retrain_many

    folder = Path(tempfile.mkdtemp(prefix="forecaster-bench-fleet-"))
    url = f"sqlite:///{folder / 'e2e.db'}"
    model = {"window": 48, "hidden_size": 32, "epochs": epochs, "patience": epochs, "device": device, "amp": amp}
    settings = Settings(database_url=url, series=[
        {"key": f"push:s{i}", "source": "push", "frequency": "1h", "model": model} for i in range(n)])
    engine = make_engine(url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    series = sine_series(n, seed=1)
    with write_session(sm) as session:
        for spec, (_, ts, v, _) in zip(settings.series, series):
            upsert_observations(session, sync_series(session, spec), pd.DataFrame({"ts": ts, "value": v}))
    peak_reset()
    t = time.perf_counter()
    reports = retrain_many(sm, settings.series)
    sync(device)
    wall = time.perf_counter() - t
    engine.dispose()
    return {"series": n, "length": LENGTH, "epochs": epochs, "device": device, "amp": amp, "wall_s": wall,
            "statuses": dict(Counter(r.status for r in reports)), "peak_mb": peak_mb(device),
            "goal": "1000 series retrained, gated and stored in < 300 s on a GPU",
            "met": n >= 1000 and wall < 300 and device == "cuda"}


def step_micro(ks: list[int], cell: str = "lstm", repeats: int = 3) -> list[dict[str, Any]]:
    """One training step (forward, backward, clipping, Adam) on a batch of 64 windows of 48 steps,
    hidden 32: the per-series path (nn.LSTM + torch.optim.Adam) against a fleet of K, per model, in
    float32 and (where the CPU multiplies bf16 natively) with bf16 products (``amp``). The fastest of
    ``repeats`` timings of each, so a busy neighbour on a shared host counts less."""
    import torch.nn.functional as F

    from forecaster.modelling.fleet import recurrence, sizing
    from forecaster.modelling.fleet import training as fleet_training
    from forecaster.modelling.network import ModelConfig, RecurrentForecaster

    H, L, B = 32, 48, 64
    cfg = ModelConfig(cell=cell, hidden_size=H, input_size=1)
    torch.manual_seed(0)

    def one(n: int = 40) -> float:
        m = RecurrentForecaster(cfg)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        x, y = torch.randn(B, L, 1), torch.randn(B)
        best = float("inf")
        for _ in range(repeats):
            for i in range(n + 5):
                if i == 5:
                    t = time.perf_counter()
                opt.zero_grad()
                F.l1_loss(m(x), y).backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
            best = min(best, (time.perf_counter() - t) / n)
        return best

    def fleet_step(K: int, lowp: torch.dtype | None, n: int = 5) -> float:
        stacked = recurrence.stack_states(cfg, [RecurrentForecaster(cfg).state_dict() for _ in range(K)],
                                          torch.device("cpu"))
        shapes = [p.shape[1:] for p in stacked]
        work = torch.cat([p.reshape(K, -1) for p in stacked], 1)
        leaves = [v.detach().requires_grad_(True) for v in fleet_training._split(work, shapes)]
        m1, m2, steps = torch.zeros_like(work), torch.zeros_like(work), torch.zeros(K, dtype=torch.float64)
        lr, clip = torch.full((K,), 1e-3, dtype=torch.float64), torch.ones(K)
        x, y, ws = torch.randn(K, B, L, 1), torch.randn(K, B), recurrence.RecurrenceBuffers()
        best = float("inf")
        for _ in range(repeats):
            for i in range(n + 1):
                if i == 1:
                    t = time.perf_counter()
                pred = recurrence.forward(cfg, leaves, x, training=True, workspace=ws, lowp=lowp)
                grads = torch.autograd.grad(F.l1_loss(pred, y, reduction="none").mean(1).sum(), leaves)
                with torch.no_grad():
                    grad = torch.cat([g.reshape(K, -1) for g in grads], 1)
                    fleet_training._adam_step(work, grad, m1, m2, steps, None, lr, clip)
            best = min(best, (time.perf_counter() - t) / n)
        return best

    alone = one()
    bf16 = sizing.cpu_bf16(torch.device("cpu"), True, cell)
    rows = []
    for K in ks:
        for lowp in (None, bf16) if bf16 is not None else (None,):
            s = fleet_step(K, lowp)
            rows.append({"K": K, "products": "bf16" if lowp else "fp32", "one_by_one_step_ms": alone * 1e3,
                         "fleet_step_ms": s * 1e3, "fleet_ms_per_model": s / K * 1e3, "ratio": alone / (s / K)})
            print(f"step micro K={K:4d} {rows[-1]['products']}: fleet {s * 1e3:7.1f} ms = {s / K * 1e3:.2f} ms "
                  f"per model; alone {alone * 1e3:.2f} ms; ratio {alone / (s / K):.2f}x", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,16,64,256")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-one-by-one", type=int, default=64, help="largest K measured one by one")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true",
                    help="ModelSpec.amp: CUDA bf16 autocast; CPU: bf16 products in the fleet's LSTM/RNN "
                         "recurrence (the per-series path ignores amp on the CPU)")
    ap.add_argument("--quick", action="store_true", help="K = 1, 8; 1 epoch")
    ap.add_argument("--out", default=None)
    ap.add_argument("--e2e", type=int, default=0, metavar="N",
                    help="only: N series retrained, gated and stored end to end (the GPU goal: 1000 in < 5 min)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both paths (1: on a shared 2-core host more spin and lose)")
    ap.add_argument("--micro", default=None, metavar="KS",
                    help="only: one training step per model, fleet of K (e.g. 16,64,256) vs the per-series path, "
                         "fp32 and bf16 products (the CPU's products' bound, without data handling or validation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.micro:
        rows = step_micro([int(k) for k in args.micro.split(",")])
        out = ROOT / "bench" / "results" / f"{args.out or 'fleet-step-' + args.device}.json"
        out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                               "load_avg_at_end": os.getloadavg()},
                                   "settings": {"cell": "lstm", "window": 48, "hidden_size": 32, "batch_size": 64},
                                   "step_micro": rows}, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        return
    if args.e2e:
        e2e = end_to_end(args.e2e, args.epochs, args.device, args.amp)
        print(json.dumps(e2e, indent=2))
        out = ROOT / "bench" / "results" / f"{args.out or 'fleet-e2e-' + args.device}.json"
        out.write_text(json.dumps({"machine": {"torch": torch.__version__, "cpus": os.cpu_count(),
                                               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
                                   "end_to_end": e2e}, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        return
    ks = [1, 8] if args.quick else [int(k) for k in args.ks.split(",")]
    epochs = 1 if args.quick else args.epochs

    spec = ModelSpec(window=48, hidden_size=32, num_layers=1, batch_size=64, epochs=epochs, patience=epochs,
                     lr=3e-3, device=args.device, amp=args.amp)
    pool = real_series()
    n_real = len(pool)
    pool += sine_series(max(ks) - len(pool) if max(ks) > len(pool) else 0)
    t0 = time.perf_counter()
    preps = []
    for i, (name, ts, v, freq) in enumerate(pool[: max(ks)]):
        preps.append((name, prepare(ts, v, frequency=freq, spec=spec.model_copy(update={"seed": i}))))
    prepare_s = time.perf_counter() - t0
    print(f"{len(preps)} series prepared in {prepare_s:.1f} s ({n_real} real slices of {LENGTH} points, "
          f"the rest seeded sines); {epochs} epochs each, device {args.device}", flush=True)

    warm = [p for _, p in preps[:2]]  # one-off costs (kernel set-up, first allocations) out of the timings
    modelling.fit_many(warm)
    modelling.fit_one(warm[0])
    rows: list[dict[str, Any]] = []
    per_series_s: float | None = None
    accuracy: list[dict[str, Any]] = []
    for K in ks:
        group = [p for _, p in preps[:K]]
        windows = sum(len(p.y_train) for p in group) * epochs
        peak_reset()
        sync(args.device)
        t = time.perf_counter()
        fleet = modelling.fit_many(group)
        sync(args.device)
        fleet_s = time.perf_counter() - t
        fleet_mb = peak_mb(args.device)
        assert all(err is None for _, _, err in fleet), [str(e) for _, _, e in fleet if e is not None]
        alone = None
        if K <= args.max_one_by_one:
            peak_reset()
            sync(args.device)
            t = time.perf_counter()
            alone = [modelling.fit_one(p) for p in group]
            sync(args.device)
            alone_s = time.perf_counter() - t
            alone_mb = peak_mb(args.device)
            per_series_s = alone_s / K
            measured = True
            accuracy = []
            for (name, p), (fm, fr, _), (am, ar) in zip(preps[:K], fleet, alone):
                if name.startswith("sine"):
                    continue
                f_mase = modelling.score(p, fm, fr).metrics
                a_mase = modelling.score(p, am, ar).metrics
                accuracy.append({"series": name, "fleet_mase": f_mase["model"]["mase"],
                                 "alone_mase": a_mase["model"]["mase"], "naive_mase": a_mase["naive"]["mase"]})
            accuracy_k = K
        else:
            assert per_series_s is not None, "measure one-by-one at a smaller K first"
            alone_s, alone_mb, measured = per_series_s * K, None, False
        row = {"K": K, "train_windows_x_epochs": windows, "fleet_s": fleet_s, "fleet_windows_per_s": windows / fleet_s,
               "fleet_peak_mb": fleet_mb, "one_by_one_s": alone_s, "one_by_one_windows_per_s": windows / alone_s,
               "one_by_one_peak_mb": alone_mb, "one_by_one": "measured" if measured else "extrapolated",
               "speedup": alone_s / fleet_s, "fleet_s_per_series": fleet_s / K}
        rows.append(row)
        print(f"K={K:4d}: fleet {fleet_s:7.1f} s  one-by-one {alone_s:7.1f} s ({row['one_by_one']})  "
              f"speed-up {row['speedup']:5.1f}x  peak {fleet_mb or 0:.0f} MB", flush=True)

    k64 = next((r for r in rows if r["K"] == 64), None)
    growth = None
    if len(rows) >= 2 and rows[-1]["K"] > rows[1]["K"]:
        a, b = rows[1], rows[-1]
        growth = (b["fleet_s"] / a["fleet_s"]) / (b["K"] / a["K"])  # 1.0 = linear in K
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "device": args.device, "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                    "load_avg_at_end": os.getloadavg()},
        "settings": {"length": LENGTH, "window": 48, "hidden_size": 32, "num_layers": 1, "cell": "lstm",
                     "batch_size": 64, "epochs": epochs, "patience": epochs, "amp": args.amp,
                     "real_slices": n_real, "max_one_by_one": args.max_one_by_one, "prepare_s": prepare_s},
        "rows": rows,
        "goal_speedup_at_64": {"goal": ">= 5x", "speedup": k64["speedup"] if k64 else None,
                               "met": bool(k64 and k64["speedup"] >= 5)},
        "fleet_cost_growth": {"note": "(fleet_s at largest K / at second K) / (K ratio); 1.0 = linear", "value": growth},
        "accuracy": {"K": accuracy_k if accuracy else None, "series": accuracy,
                     "median_ratio_fleet_over_alone": statistics.median(a["fleet_mase"] / a["alone_mase"]
                                                                        for a in accuracy) if accuracy else None},
    }
    print(f"\n{'K':>5} {'fleet s':>9} {'fleet win/s':>12} {'1-by-1 s':>10} {'1-by-1 win/s':>13} {'speed-up':>9} "
          f"{'fleet peak MB':>14}  one-by-one")
    for r in rows:
        print(f"{r['K']:5d} {r['fleet_s']:9.1f} {r['fleet_windows_per_s']:12.0f} {r['one_by_one_s']:10.1f} "
              f"{r['one_by_one_windows_per_s']:13.0f} {r['speedup']:8.1f}x {r['fleet_peak_mb'] or 0:14.0f}  "
              f"{r['one_by_one']}")
    if accuracy:
        print(f"\nholdout MASE, real series, fleet vs alone (K = {accuracy_k}):")
        for a in accuracy:
            print(f"  {a['series']:32} fleet {a['fleet_mase']:.3f}  alone {a['alone_mase']:.3f}  "
                  f"naive {a['naive_mase']:.3f}")
    out = ROOT / "bench" / "results" / f"{args.out or 'fleet-' + args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
