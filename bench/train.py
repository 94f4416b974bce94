"""Training and window-building benchmark on the bundled hourly temperature series.

    .venv/bin/python bench/train.py [--device cpu|cuda] [--quick] [--epochs N] [--batch-size B] [--amp]

In one run, on the same windows, model shape, epochs and batch size:

- ``forecaster.modelling.training.fit`` against a bare PyTorch loop written here (whole set on
  the device, seeded randperm, index batches, Adam, clipping, a no_grad
  validation pass per epoch: the loop you would write by hand) and, for
  reference, the textbook ``DataLoader(TensorDataset)`` loop. Windows/s of each
  and the ratio fit / bare (goal >= 0.9).
- ``make_windows`` against a Python loop building the same windows (goal >= 50x),
  both as views and including the normalised float32 copy the model needs.
- Peak memory: tracemalloc for the numpy work, torch.cuda.max_memory_allocated
  per trainer on CUDA, and the process's ru_maxrss.

Prints a table and writes bench/results/train-<device>.json.

    .venv/bin/python bench/train.py --phases [--phase-series sine,sp500,greensboro]

instead times one cold retrain per series and then one warm retrain from the version it made
(when that version was promoted; else the second is cold too) through the use case
(``retrain_series`` on a temp SQLite database, the example config's model settings, the bundled
snapshots) by phase, as ``TrainReport.phases`` records them (load, windows, epochs, scoring,
store), and each statistical candidate of the scoring's ladder fitted alone, searching its form
(cold) and keeping the champion's (warm); writes bench/results/train-phases.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.modelling.network import ModelConfig, RecurrentForecaster  # noqa: E402
from forecaster.modelling.training import Splits, TrainConfig, fit, pick_device, set_seed  # noqa: E402
from forecaster.modelling.windows import Scaler, make_windows, normalise, time_split  # noqa: E402

WINDOW, HOLD = 48, 168  # modelling's hourly defaults


def load_series() -> np.ndarray:
    frame = pd.read_csv(ROOT / "forecaster" / "snapshots" / "sf_temp_hourly.csv")
    return frame["value"].to_numpy(dtype=np.float64)


def loop_windows(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The obvious Python loop: one slice per window."""
    xs, ys = [], []
    for i in range(len(values) - window):
        xs.append(values[i : i + window])
        ys.append(values[i + window])
    return np.array(xs)[:, :, None], np.array(ys)


def best_time(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_windows(values: np.ndarray, repeats: int) -> dict[str, Any]:
    scaler = Scaler.fit(values)
    t_view, _ = best_time(lambda: make_windows(values, WINDOW), repeats * 20)
    t_loop, (Xl, yl) = best_time(lambda: loop_windows(values, WINDOW), repeats)
    t_norm, _ = best_time(lambda: normalise(*make_windows(values, WINDOW), scaler, "value"), repeats)
    t_loop_norm, _ = best_time(lambda: normalise(*loop_windows(values, WINDOW), scaler, "value"), repeats)
    X, y = make_windows(values, WINDOW)
    assert np.array_equal(X, Xl) and np.array_equal(y, yl)

    def peak(fn: Any) -> int:
        tracemalloc.start()
        fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    return {
        "windows": len(y), "window": WINDOW,
        "make_windows_s": t_view, "python_loop_s": t_loop, "speedup_views": t_loop / t_view,
        "make_windows_normalised_s": t_norm, "python_loop_normalised_s": t_loop_norm,
        "speedup_normalised": t_loop_norm / t_norm,
        "peak_bytes_make_windows": peak(lambda: make_windows(values, WINDOW)),
        "peak_bytes_python_loop": peak(lambda: loop_windows(values, WINDOW)),
        "peak_bytes_make_windows_normalised": peak(lambda: normalise(*make_windows(values, WINDOW), scaler, "value")),
        "peak_bytes_python_loop_normalised": peak(lambda: normalise(*loop_windows(values, WINDOW), scaler, "value")),
    }


def bare_loop(model: nn.Module, data: Splits, cfg: TrainConfig, device: torch.device) -> None:
    """The hand-written loop fit() is measured against: same work, no bookkeeping."""
    xt, yt, xv, yv = (torch.as_tensor(a, device=device) for a in (data.x_train, data.y_train, data.x_val, data.y_val))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    amp = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    for _ in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=gen, device=device).split(cfg.batch_size):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.l1_loss(model(xt[idx]).float(), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            F.l1_loss(model(xv).float(), yv).item()


def dataloader_loop(model: nn.Module, data: Splits, cfg: TrainConfig, device: torch.device) -> None:
    """The textbook loop: TensorDataset + DataLoader(shuffle=True), batches moved per step."""
    ds = torch.utils.data.TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    xv, yv = torch.as_tensor(data.x_val, device=device), torch.as_tensor(data.y_val, device=device)
    for _ in range(cfg.epochs):
        model.train()
        for xb, yb in loader:
            loss = F.l1_loss(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        model.eval()
        with torch.no_grad():
            F.l1_loss(model(xv), yv).item()


def bench_training(values: np.ndarray, cfg: TrainConfig, device: torch.device, repeats: int) -> dict[str, Any]:
    X, y = make_windows(values, WINDOW)
    train, val, _ = time_split(len(y), val=HOLD, holdout=HOLD)
    scaler = Scaler.fit(values[: train.stop + WINDOW])
    xt, yt, _, _ = normalise(X[train], y[train], scaler, "value")
    xv, yv, _, _ = normalise(X[val], y[val], scaler, "value")
    data = Splits(xt, yt, xv, yv)  # type: ignore[arg-type]
    shape = ModelConfig(cell="lstm", input_size=1, hidden_size=32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(name: str) -> tuple[float, int]:
        set_seed(cfg.seed)
        model = RecurrentForecaster(shape).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        if name == "fit":
            fit(model, data, cfg)
        elif name == "bare":
            bare_loop(model, data, cfg, device)
        else:
            dataloader_loop(model, data, cfg, device)
        sync()
        mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        return time.perf_counter() - t0, mem

    warm = TrainConfig(**{**cfg.__dict__, "epochs": 1})
    set_seed(0)
    fit(RecurrentForecaster(shape).to(device), data, warm)  # CUDA context, cuDNN plans, allocator
    results: dict[str, Any] = {"train_windows": len(yt), "val_windows": len(yv)}
    names = ("fit", "bare", "dataloader")
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for _ in range(repeats):  # interleaved, best of n: a busy neighbour hurts every trainer alike
        for name in names:
            runs[name].append(run(name))
    for name in names:
        seconds = min(r[0] for r in runs[name])
        results[name] = {"seconds": seconds, "windows_per_s": cfg.epochs * len(yt) / seconds,
                         "cuda_peak_bytes": max(r[1] for r in runs[name])}
    results["ratio_fit_vs_bare"] = results["fit"]["windows_per_s"] / results["bare"]["windows_per_s"]
    results["ratio_fit_vs_dataloader"] = results["fit"]["windows_per_s"] / results["dataloader"]["windows_per_s"]
    return results


PHASE_SERIES = {  # name -> the example config's series block (forecaster.toml), its source unreachable
    "sine": 'key = "sine:demo"\nsource = "sine"\nfrequency = "1h"\nparams = { period = 24, noise = 0.1, length = 2000, seed = 1 }',
    "sp500": 'key = "yfinance:^GSPC:close"\nsource = "yfinance"\nfrequency = "1B"\n'
             'params = { ticker = "^GSPC", field = "close", period = "5y" }\nsnapshot = "sp500_daily_close"',
    "greensboro": 'key = "open-meteo:greensboro:temperature_2m"\nsource = "open-meteo"\nfrequency = "1h"\n'
                  'params = { latitude = 36.10, longitude = -79.94, variable = "temperature_2m", history_days = 365 }\n'
                  'snapshot = "greensboro_temp_hourly"',
}


def bench_phases(names: list[str]) -> dict[str, Any]:
    """One cold retrain per series by phase, and the ladder's statistical candidates one at a time."""
    import tempfile

    from forecaster.calendar.frequency import season_length
    from forecaster.config.loading import load_settings
    from forecaster.modelling.preparation import prepare
    from forecaster.modelling.selection import ladder
    from forecaster.store.observations import load_values
    from forecaster.store.registry import champion_of
    from forecaster.store.series import find_series
    from forecaster.usecases.database import move_schema, open_database
    from forecaster.usecases.executor import run_here
    from forecaster.usecases.retrain import load_training, retrain_series

    load_training()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "forecaster.toml"
        cfg.write_text(f'database_url = "sqlite:///{tmp}/fc.db"\n[sources.yfinance]\nbase_url = "http://127.0.0.1:9"\n'
                       '[sources.open-meteo]\nforecast_url = "http://127.0.0.1:9/v1/forecast"\n'
                       'archive_url = "http://127.0.0.1:9/v1/archive"\n'
                       + "".join(f"\n[[series]]\n{PHASE_SERIES[n]}\n" for n in names), encoding="utf-8")
        settings = load_settings(str(cfg))
        engine, sm = open_database(settings.database_url)
        move_schema(engine, "head")
        run_here(sm, settings, kind="ingest", snapshot_fallback=True)
        for name, spec in zip(names, settings.series):
            runs = {"cold": retrain_series(sm, spec, cold=True)}
            runs["warm"] = retrain_series(sm, spec)  # from the champion just made, when it was promoted
            with sm() as session:
                series = find_series(session, spec.key)
                assert series is not None
                ts, values = load_values(session, series.id)
                champ = champion_of(session, series.id)
                kept = ((champ.hyperparameters.get("serving") or {}).get("fitted") or {}) if champ else {}
            prep = prepare(ts, values, frequency=spec.frequency, spec=spec.model, horizon=spec.steps)
            p_val, p_hold = prep.val.start + prep.window, prep.holdout.start + prep.window
            candidates: dict[str, dict[str, float]] = {"cold": {}, "warm": {}}
            for cand in prep.spec.candidates:
                for way, keep in (("cold", None), ("warm", kept or None)):
                    t0 = time.perf_counter()
                    ladder(prep.ts, prep.values, p_val=p_val, p_hold=p_hold, season=season_length(spec.frequency),
                           scale=prep.scale, model_forecasts=None, level=prep.spec.interval_level,
                           statistical=(cand,), horizon=spec.steps, keep=keep)
                    candidates[way][cand] = round(time.perf_counter() - t0, 3)
            out[name] = {"points": len(values), "candidate_alone_s": candidates}
            for way, report in runs.items():
                start = report.start or {}
                out[name][way] = {"status": report.status, "start": start.get("kind"), "why": start.get("why"),
                                  "total_s": round(report.duration_s, 3),
                                  "phases_s": {k: round(v, 3) for k, v in report.phases.items()}}
        engine.dispose()
    return out


def print_phases(phases: dict[str, Any]) -> None:
    names = ("load", "windows", "epochs", "scoring", "store")
    print(f"{'series':<12} {'start':<6} {'points':>7} " + " ".join(f"{n:>8}" for n in names)
          + f" {'total':>8}  candidates alone")
    for series, r in phases.items():
        for way in ("cold", "warm"):
            w = r[way]
            cells = " ".join(f"{w['phases_s'].get(n, 0):8.2f}" for n in names)
            cands = ", ".join(f"{c} {t:.2f}" for c, t in r["candidate_alone_s"][way].items())
            print(f"{series:<12} {w['start'] or '-':<6} {r['points']:>7} {cells} {w['total_s']:8.2f}  {cands}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phases", action="store_true", help="time a cold and a warm retrain per series by phase instead")
    ap.add_argument("--phase-series", default="sine,sp500,greensboro", help=f"of {', '.join(PHASE_SERIES)}")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat (default: 3 epochs, best of 5)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    args = ap.parse_args()
    if args.phases:
        phases = bench_phases([n.strip() for n in args.phase_series.split(",") if n.strip()])
        print_phases(phases)
        dest = ROOT / "bench" / "results" / "train-phases.json"
        dest.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "series": phases}, indent=2) + "\n")
        print(f"wrote {dest.relative_to(ROOT)}")
        return
    device = pick_device(args.device)
    epochs = args.epochs or (2 if args.quick else 3)
    repeats = 1 if args.quick else 5
    cfg = TrainConfig(epochs=epochs, patience=epochs + 1, batch_size=args.batch_size, device=device.type,
                      amp=args.amp, seed=0)
    values = load_series()
    windows = bench_windows(values, repeats=3 if args.quick else 5)
    training = bench_training(values, cfg, device, repeats)
    report = {
        "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
        "epochs": epochs, "batch_size": args.batch_size, "amp": args.amp, "model": "lstm hidden 32, 1 layer",
        "windows": windows, "training": training,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    tr = training
    rows = [
        ("fit (ours)", f"{tr['fit']['windows_per_s']:,.0f} win/s", f"{tr['fit']['seconds']:.2f} s"),
        ("bare loop", f"{tr['bare']['windows_per_s']:,.0f} win/s", f"{tr['bare']['seconds']:.2f} s"),
        ("DataLoader loop", f"{tr['dataloader']['windows_per_s']:,.0f} win/s", f"{tr['dataloader']['seconds']:.2f} s"),
        ("fit / bare", f"{tr['ratio_fit_vs_bare']:.2f}x", "goal >= 0.9x"),
        ("fit / DataLoader", f"{tr['ratio_fit_vs_dataloader']:.2f}x", ""),
        ("make_windows (views)", f"{windows['make_windows_s'] * 1e6:,.1f} us", f"{windows['speedup_views']:,.0f}x vs loop"),
        ("python loop", f"{windows['python_loop_s'] * 1e3:,.2f} ms", "goal >= 50x"),
        ("+ normalised copy", f"{windows['make_windows_normalised_s'] * 1e3:,.2f} ms",
         f"{windows['speedup_normalised']:,.1f}x vs loop + same copy"),
        ("peak mem: windows", f"{windows['peak_bytes_make_windows'] / 2**10:.1f} KiB",
         f"loop {windows['peak_bytes_python_loop'] / 2**20:.2f} MiB (tracemalloc)"),
        ("peak mem: + normalised", f"{windows['peak_bytes_make_windows_normalised'] / 2**20:.2f} MiB",
         f"loop {windows['peak_bytes_python_loop_normalised'] / 2**20:.2f} MiB"),
        ("peak CUDA mem (fit)", f"{tr['fit']['cuda_peak_bytes'] / 2**20:.1f} MiB", f"bare {tr['bare']['cuda_peak_bytes'] / 2**20:.1f} MiB"),
        ("ru_maxrss", f"{report['ru_maxrss_kib'] / 1024:.0f} MiB", ""),
    ]
    print(f"device {report['device']} ({report['device_name']}), torch {report['torch']}, {epochs} epochs, "
          f"batch {args.batch_size}, {tr['train_windows']} train windows of {WINDOW}")
    for a, b, c in rows:
        print(f"  {a:<22} {b:>18}  {c}")
    out = ROOT / "bench" / "results" / f"train-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
