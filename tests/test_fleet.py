"""Fleet training (forecaster/modelling/fleet/): K models in one batched pass, each as if trained alone.

Tolerances, stated once: the fleet runs the same maths as trainer.fit (nn.LSTM/GRU/RNN + Adam)
with other kernels, so weights agree to float32 rounding, not bit for bit: WEIGHT_ATOL after a
few epochs (measured max 7e-7 after 4; after 25, 1.1e-6 for LSTM/GRU and 2e-5 for a one-layer RNN, whose
training amplifies rounding). A series' holdout MASE from a fleet is within MASE_RTOL (relative) of training it alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from forecaster.modelling import fitting as modelling
from forecaster.config.loading import load_settings
from forecaster.config.settings import ModelSpec
from forecaster.modelling.preparation import Prepared, prepare
from forecaster.store.tables import Series, make_engine, make_sessionmaker
from forecaster.modelling.fleet.recurrence import forward, stack_states
from forecaster.modelling.fleet.sizing import cpu_bf16
from forecaster.modelling.fleet.training import Member, fit_fleet
from forecaster.store.observations import load_values
from forecaster.store.series import find_series
from forecaster.usecases.ingest import ingest_series
from forecaster.modelling.network import ModelConfig, RecurrentForecaster
from forecaster.modelling.training import Splits, TrainConfig
from forecaster.store import migrate

WEIGHT_ATOL = 1e-5  # measured: at most 7e-7 after SMALL's 4 epochs (lstm x1/x2, gru x2 + calendar, rnn x1/x2 + calendar)
MASE_RTOL = 0.10
SMALL = dict(hidden_size=8, window=24, epochs=4, batch_size=32, lr=0.01, patience=10, device="cpu")


def sine(n: int, *, seed: int = 1, level: float = 0.0, amplitude: float = 1.0, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return ts, level + amplitude * np.sin(2 * np.pi * np.arange(n) / 24) + noise * rng.normal(size=n)


def prepared(n: int = 400, **spec) -> Prepared:
    ts, v = sine(n, seed=spec.pop("data_seed", 1))
    return prepare(ts, v, frequency="1h", spec=ModelSpec(**{**SMALL, **spec}))


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = WEIGHT_ATOL) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("extra", [
    {},  # lstm, one layer, the value only
    {"cell": "gru", "num_layers": 2, "calendar": True},  # 5 input features, stacked layers
    {"cell": "rnn"},
    {"num_layers": 2},  # the lower layer's input gradient (the recurrence's dx)
    {"cell": "rnn", "num_layers": 2, "calendar": True},
])
def test_a_fleet_of_one_gives_the_weights_of_the_per_series_path(extra):
    prep = prepared(**extra)
    alone, alone_result = modelling.fit_one(prep)
    [(fleet, fleet_result, error)] = modelling.fit_many([prep])
    assert error is None
    assert_same_weights(state(fleet), state(alone))
    assert (fleet_result.epochs_run, fleet_result.best_epoch) == (alone_result.epochs_run, alone_result.best_epoch)
    assert fleet_result.best_val_loss == pytest.approx(alone_result.best_val_loss, rel=1e-4)
    # The exported state_dict is exactly RecurrentForecaster's: the stored artifact is unchanged.
    assert list(state(fleet)) == list(RecurrentForecaster(prep.model_config()).state_dict())


def test_the_batched_forward_is_each_members_own_model():
    config = ModelConfig("lstm", input_size=3, hidden_size=6, num_layers=2)
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(RecurrentForecaster(config).eval())
    x = torch.randn(3, 5, 7, 3)
    out = forward(config, stack_states(config, [m.state_dict() for m in models], torch.device("cpu")), x)
    for k, m in enumerate(models):
        torch.testing.assert_close(out[k], m(x[k]), rtol=0, atol=1e-6)


def test_members_of_a_fleet_do_not_interact_and_a_diverging_one_fails_alone():
    preps = [prepared(400, data_seed=1), prepared(520, data_seed=2, lr=0.02, seed=5), prepared(330, data_seed=3)]
    alone = [modelling.fit_many([p])[0] for p in preps]
    config = preps[0].model_config()
    bad = preps[2].splits()
    y = bad.y_train.copy()
    y[7] = np.inf  # a target the loss cannot survive
    members = [Member(p.splits(), p.train_config()) for p in preps[:2]]
    members.append(Member(Splits(bad.x_train, y, bad.x_val, bad.y_val), preps[2].train_config()))
    results = fit_fleet(config, members)
    assert [r.fleet_size for r in results] == [3, 3, 3]
    for r, (model, result, _) in zip(results[:2], alone[:2]):
        assert r.error is None and r.state_dict is not None
        assert_same_weights(r.state_dict, state(model), atol=1e-6)
        assert r.result.epochs_run == result.epochs_run
    assert results[2].state_dict is None
    assert "loss became" in str(results[2].error) and "at epoch 1" in str(results[2].error)


def test_early_stopping_freezes_one_member_at_its_best_weights_while_the_others_go_on():
    quick = prepared(400, data_seed=1, lr=0.2, patience=1, epochs=30)  # a big lr: val loss soon gets worse
    steady = prepared(400, data_seed=2, patience=50, epochs=8)
    (m_quick, r_quick, _), (m_steady, r_steady, _) = modelling.fit_many([quick, steady])
    assert r_steady.epochs_run == 8
    assert r_quick.epochs_run < 30 and r_quick.best_epoch == r_quick.epochs_run - 1  # stopped on patience 1
    # The weights kept are those of its best epoch: they give back its best validation loss.
    with torch.inference_mode():
        pred = m_quick(torch.as_tensor(quick.x_val))
    val = torch.nn.functional.l1_loss(pred, torch.as_tensor(quick.y_val)).item()
    assert val == pytest.approx(r_quick.best_val_loss, rel=1e-4)
    # And a member trained alone with the same settings stops at the same epoch with the same weights.
    m_alone, r_alone = modelling.fit_one(quick)
    assert r_alone.epochs_run == r_quick.epochs_run
    assert_same_weights(state(m_quick), state(m_alone), atol=1e-4)


FLEET_TOML = """
[[series]]
key = "sine:plain"
source = "sine"
frequency = "1h"
params = {{ length = 500, seed = 1, noise = 0.2 }}
model = {model}

[[series]]
key = "sine:long-and-big"
source = "sine"
frequency = "1h"
params = {{ length = 800, seed = 2, level = 5000, amplitude = 800, noise = 60 }}
model = {model}

[[series]]
key = "sine:short"
source = "sine"
frequency = "1h"
params = {{ length = 40, seed = 3 }}
model = {model}

[[series]]
key = "sine:flat"
source = "sine"
frequency = "1h"
params = {{ length = 600, seed = 4, amplitude = 0, noise = 0 }}
model = {model}

[[series]]
key = "sine:small"
source = "sine"
frequency = "1h"
params = {{ length = 420, seed = 5, level = -3, amplitude = 0.01, noise = 0.002 }}
model = {model}
"""


def _fleet_db(tmp_path: Path, model: str):
    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n' + FLEET_TOML.format(model=model))
    s = load_settings(cfg)
    engine = make_engine(s.database_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    for spec in s.series:
        assert ingest_series(sm, s, spec).ok
    return s, engine, sm


def test_a_fleet_of_series_gives_each_the_version_it_gets_alone_and_the_bad_ones_fail_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from forecaster.modelling.fleet import sizing as fleet
    from forecaster.usecases.retrain import retrain_many

    monkeypatch.setattr(fleet, "FLEET_ON_CPU", True)  # as on a GPU: the grouped path, here on the CPU

    model = "{ hidden_size = 8, window = 24, epochs = 8, batch_size = 32, lr = 0.01, device = 'cpu' }"
    s, engine, sm = _fleet_db(tmp_path, model)
    reports = {r.series_key: r for r in retrain_many(sm, s.series)}
    assert list(reports) == [spec.key for spec in s.series]  # every series, in order
    assert reports["sine:short"].status == "skipped" and "40 given" in reports["sine:short"].reason
    assert reports["sine:flat"].status == "failed" and "constant" in reports["sine:flat"].reason
    good = ["sine:plain", "sine:long-and-big", "sine:small"]
    for key in good:
        r = reports[key]
        assert r.status in ("promoted", "rejected") and r.version == 1, r.reason
        spec = s.series_by_key(key)
        with sm() as session:
            ts, v = load_values(session, find_series(session, key).id)
        alone = modelling.train_series(ts, v, frequency="1h", spec=spec.model, horizon=spec.steps)
        fleet_mase, alone_mase = r.metrics["model"]["mase"], alone.metrics["model"]["mase"]
        assert fleet_mase == pytest.approx(alone_mase, rel=MASE_RTOL), key
        assert fleet_mase < r.metrics["naive"]["mase"], key  # each learned its own series
    with sm() as session:
        from forecaster.store.tables import ModelVersion
        from sqlalchemy import select

        lineages = [mv.lineage for mv in session.scalars(select(ModelVersion))]
    assert sorted(lin["series_key"] for lin in lineages) == sorted(good)
    assert all(lin["fleet_size"] == 3 for lin in lineages)
    engine.dispose()


def test_stored_forecasts_refreshed_in_batched_passes_equal_the_per_series_ones(tmp_path: Path):
    """After an ingest of many series, refresh_forecasts runs the champions in one pass per model
    shape; each stored value is what refresh_forecast computes with the series' own model."""
    from sqlalchemy import select

    from forecaster.store import registry
    from forecaster.config.settings import SeriesSpec
    from forecaster.store.tables import Forecast, write_session
    from forecaster.usecases.forecasting import BatchedRefresh, refresh_forecast, refresh_forecasts
    from forecaster.store.observations import upsert as upsert_observations
    from forecaster.store.series import sync_series

    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    tiny = dict(hidden_size=4, window=24, epochs=1, batch_size=64, device="cpu", candidates=())
    shapes = [{}, {}, {"cell": "gru"}, {"calendar": True}, {}]  # three shapes, one group of three
    with write_session(sm) as session:
        for i, extra in enumerate(shapes):
            spec = SeriesSpec(key=f"push:s{i}", source="push", frequency="1h", model=ModelSpec(**tiny, **extra))
            series = sync_series(session, spec)
            ts, v = sine(300, seed=i, level=10 * i)
            upsert_observations(session, series, pd.DataFrame({"ts": ts, "value": v}))
            out = modelling.train_series(ts, v, frequency="1h", spec=spec.model, horizon=spec.steps)
            mv = registry.add_version(session, series, hyperparameters=out.hyperparameters, scaler=out.scaler,
                                      weights=out.weights, metrics=out.metrics, lineage=out.lineage,
                                      status="candidate", status_reason="test")
            registry.make_champion(session, series, mv, "test")
        baseline = sync_series(session, SeriesSpec(key="push:baseline", source="push", frequency="1h"))
        ts, v = sine(100, seed=9)
        upsert_observations(session, baseline, pd.DataFrame({"ts": ts, "value": v}))
    hook = BatchedRefresh()
    with sm() as session:
        every = list(session.scalars(select(Series)))
        for s in every:
            hook(session, s)
    assert hook.flush(sm) == len(every) == 6
    with write_session(sm) as session:
        batched = {f.series_id: f for f in session.scalars(select(Forecast).where(Forecast.step == 1))}
        assert len(batched) == 6
        for s in every:
            single = refresh_forecast(session, s)  # the per-series path: one model load, one pass
            assert single is not None
            b = batched[s.id]
            assert (b.method, b.model_version_id, b.target_ts) == (single.method, single.model_version_id,
                                                                   single.target_ts)
            assert b.value == pytest.approx(single.value, rel=1e-5, abs=1e-6), s.key
            assert (b.model_version_id is None) == (s.key == "push:baseline")  # what serves: a version or the baseline
        again = refresh_forecasts(session, every)  # direct call: one row per series, all stored
        assert set(again) == {s.id for s in every}
    engine.dispose()


def test_train_has_a_one_by_one_flag(tmp_path: Path):
    import subprocess
    import sys

    cfg = tmp_path / "forecaster.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "f.db"}"\n')
    out = subprocess.run([sys.executable, "-m", "forecaster.cli", "--config", str(cfg), "train", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--one-by-one" in out.stdout


def test_the_recurrence_backward_runs_once_and_says_so():
    """The backward writes the gate gradients over the saved factors: a second pass must fail, not lie."""
    config = ModelConfig("lstm", input_size=1, hidden_size=4)
    torch.manual_seed(0)
    params = [p.requires_grad_(True) for p in stack_states(config, [RecurrentForecaster(config).state_dict()] * 2,
                                                           torch.device("cpu"))]
    out = forward(config, params, torch.randn(2, 3, 5, 1), training=True).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        out.backward()


needs_bf16 = pytest.mark.skipif(cpu_bf16(torch.device("cpu"), True, "lstm") is None,
                                reason="this CPU has no native bfloat16 products")


@needs_bf16
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_amp_on_the_cpu_runs_the_recurrence_products_in_bf16_to_bf16_accuracy(cell):
    """ModelSpec.amp on the CPU (opt-in): the fleet's products take bfloat16 operands. The gradients
    differ from float32 by bf16 rounding only, and the trained model is as good as the float32 one."""
    config = ModelConfig(cell, input_size=1, hidden_size=16)
    torch.manual_seed(0)
    states = [RecurrentForecaster(config).state_dict() for _ in range(3)]
    x, y = torch.randn(3, 32, 24, 1), torch.randn(3, 32)
    grads = {}
    for lowp in (None, torch.bfloat16):
        params = [p.requires_grad_(True) for p in stack_states(config, states, torch.device("cpu"))]
        pred = forward(config, params, x, training=True, lowp=lowp)
        grads[lowp] = torch.autograd.grad(((pred - y) ** 2).mean(), params)
    for g32, g16 in zip(grads[None], grads[torch.bfloat16]):
        rel = ((g16 - g32).norm() / g32.norm()).item()
        assert 1e-6 < rel < 0.03  # really bf16 (not float32), and only bf16 rounding apart

    prep = prepared(cell=cell, amp=True, epochs=6)
    [(model, result, error)] = modelling.fit_many([prep])
    alone, alone_result = modelling.fit_one(prep)  # the per-series path: amp does nothing on the CPU
    assert error is None
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())  # the artifact is unchanged
    assert list(state(model)) == list(state(alone))
    assert max((a - b).abs().max().item() for a, b in zip(state(model).values(), state(alone).values())) > 1e-5
    assert result.best_val_loss == pytest.approx(alone_result.best_val_loss, rel=0.05)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("full", [True, False])
def test_the_recurrence_backward_is_the_derivative_of_its_forward(cell, full):
    """In float64, the hand-written backward (inputs, weights, both biases) against central differences
    of the forward along random directions: the maths, independent of nn.LSTM/nn.RNN."""
    from forecaster.modelling.fleet.recurrence import _Recurrence

    gen = torch.Generator().manual_seed(3)
    L, K, Fi, B, H = 6, 2, 3, 4, 5
    G = 4 * H if cell == "lstm" else H
    shapes = [(L, K, Fi, B), (K, G, Fi), (K, G, H), (K, G), (K, G)]
    inputs = [(0.5 * torch.randn(s, generator=gen, dtype=torch.float64)).requires_grad_(True) for s in shapes]
    weight = torch.randn((L, K, H, B) if full else (K, H, B), generator=gen, dtype=torch.float64)

    def loss(*xs: torch.Tensor) -> torch.Tensor:
        return (_Recurrence.apply(*xs, cell, full, torch.is_grad_enabled(), None, None) * weight).sum()

    grads = torch.autograd.grad(loss(*inputs), inputs)
    eps = 1e-6
    for _ in range(3):
        v = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        with torch.no_grad():
            up = loss(*[x + eps * d for x, d in zip(inputs, v)])
            down = loss(*[x - eps * d for x, d in zip(inputs, v)])
        numeric = ((up - down) / (2 * eps)).item()
        analytic = sum((g * d).sum() for g, d in zip(grads, v)).item()
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_on_the_cpu_only_amp_groups_of_16_or_more_train_as_fleets(tmp_path: Path):
    """A float32 CPU fleet is no faster than the per-series loop, and a small bf16 one is slower:
    those groups train member by member, even on the grouped path."""
    import torch

    from forecaster.modelling.fleet import sizing as fleet
    from forecaster.usecases.retrain import retrain_many

    native = fleet.cpu_bf16(torch.device("cpu"), True, "lstm") is not None
    assert fleet.fleet_pays("cpu", size=256) is False
    assert fleet.fleet_pays("cpu", amp=True, cell="lstm", size=fleet.CPU_MIN_MEMBERS) is native
    assert fleet.fleet_pays("cpu", amp=True, cell="rnn", size=64) is native
    assert fleet.fleet_pays("cpu", amp=True, cell="lstm", size=fleet.CPU_MIN_MEMBERS - 1) is False
    assert fleet.fleet_pays("cpu", amp=True, cell="gru", size=64) is False  # GRU: autograd cell, no bf16 path

    model = "{ hidden_size = 8, window = 24, epochs = 3, batch_size = 32, lr = 0.01, device = 'cpu', amp = true }"
    s, engine, sm = _fleet_db(tmp_path, model)
    reports = {r.series_key: r for r in retrain_many(sm, s.series)}
    assert reports["sine:flat"].status == "failed" and "constant" in reports["sine:flat"].reason
    for key in ("sine:plain", "sine:long-and-big", "sine:small"):
        assert reports[key].status in ("promoted", "rejected") and reports[key].version == 1, reports[key].reason
    with sm() as session:
        from sqlalchemy import select

        from forecaster.store.tables import ModelVersion

        lineages = [mv.lineage for mv in session.scalars(select(ModelVersion))]
    assert len(lineages) == 3 and all("fleet_size" not in lin for lin in lineages)  # three: trained alone
    engine.dispose()


def _concurrently(fn, specs):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(specs)) as pool:
        return {r.series_key: r for r in pool.map(fn, specs)}


def test_a_workers_concurrent_train_tasks_of_one_shape_meet_and_train_as_one_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """What a worker with --concurrency does: one task per series on its own thread, gathered into a fleet."""
    from forecaster.modelling.fleet import sizing as fleet
    from forecaster.usecases.fleets import FleetGatherer
    from forecaster.usecases.retrain import retrain_series

    monkeypatch.setattr(fleet, "FLEET_ON_CPU", True)  # as on a GPU
    model = "{ hidden_size = 8, window = 24, epochs = 8, batch_size = 32, lr = 0.01, device = 'cpu' }"
    s, engine, sm = _fleet_db(tmp_path, model)
    good = ["sine:plain", "sine:long-and-big", "sine:small"]
    gather = FleetGatherer(wait_s=60, max_size=len(good))  # full at three: no one waits the minute
    specs = [s.series_by_key(k) for k in [*good, "sine:short", "sine:flat"]]
    reports = _concurrently(lambda spec: retrain_series(sm, spec, gather=gather), specs)
    assert reports["sine:short"].status == "skipped" and reports["sine:flat"].status == "failed"  # alone, at once
    for key in good:
        r = reports[key]
        assert r.status in ("promoted", "rejected") and r.version == 1, r.reason
        with sm() as session:
            ts, v = load_values(session, find_series(session, key).id)
        spec = s.series_by_key(key)
        alone = modelling.train_series(ts, v, frequency="1h", spec=spec.model, horizon=spec.steps)
        assert r.metrics["model"]["mase"] == pytest.approx(alone.metrics["model"]["mase"], rel=MASE_RTOL), key
    with sm() as session:
        from sqlalchemy import select

        from forecaster.store.tables import ModelVersion

        assert sorted(mv.lineage["fleet_size"] for mv in session.scalars(select(ModelVersion))) == [3, 3, 3]
    engine.dispose()


def test_a_train_run_in_process_trains_the_series_of_one_shape_as_one_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`forecaster train`, or a run on SQLite: each series goes through run_series, on threads that meet in a fleet."""
    from sqlalchemy import select

    from forecaster.modelling.fleet import sizing as fleet
    from forecaster.store.tables import ModelVersion
    from forecaster.usecases.executor import run_here

    monkeypatch.setattr(fleet, "FLEET_ON_CPU", True)  # as on a GPU
    model = "{ hidden_size = 8, window = 24, epochs = 8, batch_size = 32, lr = 0.01, device = 'cpu' }"
    s, engine, sm = _fleet_db(tmp_path, model)
    s = s.model_copy(update={"workers": s.workers.model_copy(update={"fleet_wait_s": 5.0})})
    report = run_here(sm, s, kind="train")
    statuses = {r.series_key: r.status for r in report.results}
    assert statuses["sine:short"] == "skipped" and statuses["sine:flat"] == "failed"
    assert (report.run.status, report.run.series_done, report.run.series_failed) == ("partial", 4, 1)
    with sm() as session:
        assert sorted(mv.lineage["fleet_size"] for mv in session.scalars(select(ModelVersion))) == [3, 3, 3]
    assert run_here(sm, s, kind="train", one_by_one=True).run.status == "partial"
    with sm() as session:
        assert sum("fleet_size" not in mv.lineage for mv in session.scalars(select(ModelVersion))) == 3
    engine.dispose()


def test_train_tasks_whose_shape_cannot_fleet_here_never_wait(tmp_path: Path):
    import time

    from forecaster.usecases.fleets import FleetGatherer
    from forecaster.usecases.retrain import retrain_series

    model = "{ hidden_size = 8, window = 24, epochs = 2, batch_size = 32, lr = 0.01, device = 'cpu' }"  # float32
    s, engine, sm = _fleet_db(tmp_path, model)
    gather = FleetGatherer(wait_s=120, max_size=8)
    specs = [s.series_by_key(k) for k in ("sine:plain", "sine:long-and-big", "sine:small")]
    started = time.monotonic()
    reports = _concurrently(lambda spec: retrain_series(sm, spec, gather=gather), specs)
    assert time.monotonic() - started < 60, "a task waited for a fleet that cannot pay on this CPU"
    assert all(r.version == 1 for r in reports.values()), reports
    with sm() as session:
        from sqlalchemy import select

        from forecaster.store.tables import ModelVersion

        assert all("fleet_size" not in mv.lineage for mv in session.scalars(select(ModelVersion)))
    engine.dispose()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_fleet_of_one_trains_a_path_head_as_the_per_series_path_does(cell):
    ts, v = sine(400)
    prep = prepare(ts, v, frequency="1h", spec=ModelSpec(**{**SMALL, "cell": cell}), horizon=6)
    alone, _ = modelling.fit_one(prep)
    [(fleet, _, error)] = modelling.fit_many([prep])
    assert error is None and prep.y_train.shape[1] == 6
    assert_same_weights(state(fleet), state(alone))
    config = prep.model_config()
    x = torch.randn(2, 5, prep.window, prep.input_size)
    models = [alone.eval(), fleet.eval()]
    out = forward(config, stack_states(config, [m.state_dict() for m in models], torch.device("cpu")), x)
    assert out.shape == (2, 5, 6)  # a path of 6 steps per window, from one forward pass
    for k, m in enumerate(models):
        torch.testing.assert_close(out[k], m(x[k]), rtol=0, atol=1e-6)
