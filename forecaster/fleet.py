"""Fleet training: K separate recurrent models of one shape, advanced together in one batched pass.

Training one small LSTM per series spends most of its time on per-step overhead
of tiny matrices (CPU) or leaves most of the device idle (GPU). A fleet stacks
the parameters of K models along a leading axis and runs the recurrence with
batched matrix products (``torch.baddbmm`` over (K, B, ·) stacks), so one step
advances every model. ``nn.LSTM`` has no batched-weights (vmap) rule, so the
cell maths is written out here, gate for gate as torch documents it:

    lstm  i, f, g, o = x W_ih' + b_ih + h W_hh' + b_hh;  c = σf·c + σi·tanh g;  h = σo·tanh c
    gru   r, z = σ(x W_i{r,z}' + b + h W_h{r,z}' + b);  n = tanh(x W_in' + b_in + r·(h W_hn' + b_hn));
          h = (1 - z)·n + z·h
    rnn   h = tanh(x W_ih' + b_ih + h W_hh' + b_hh)

Every member keeps what it would have alone: its own data and splits (padded
to the longest, masked), initial weights (built by ``RecurrentForecaster`` from
its seed), batch order (its own seeded generator), learning rate, Adam state
and step count, gradient-norm clipping, early stopping (a member whose patience
runs out is frozen at its best weights while the others go on), epoch budget
and divergence check (a member whose loss turns NaN fails alone). A member's
weights are exported as exactly the ``state_dict`` of
``forecaster.model.RecurrentForecaster``, so what is stored cannot tell how it
was trained. Extra input channels (calendar or other features) are just a wider
last axis: the fleet is generic over the input size.

LSTM and RNN run the recurrence in ``_Recurrence`` (a hand-written backward over
time-major buffers); GRU runs autograd over the step loop.

Equivalence: the same maths as ``trainer.fit`` with nn.LSTM/GRU/RNN, but not the
same kernels, so a fleet of one matches the per-series path to float32 rounding
(max 1.4e-6 after 25 epochs; tests/test_fleet.py states the tolerance), not bit for bit.

Where it pays: on a GPU, where one small model leaves the device idle. On the
2-core CPU of this project nn.LSTM's fused kernels at batch 64 are compute-bound
(B=1 1.7 ms, B=64 10 ms, B=512 80 ms per forward+backward) and the eager batched
cell costs more per model, so retraining keeps the per-series loop on the CPU
(``FLEET_ON_CPU``; bench/results/fleet-cpu.json).

Memory: ``fleet_capacity`` sizes a fleet to a byte budget (CUDA: a share of the
free device memory; CPU: a fixed budget), and ``fit_fleet`` splits larger
groups into consecutive fleets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from forecaster.errors import TrainingDiverged
from forecaster.model import ModelConfig, RecurrentForecaster
from forecaster.trainer import Progress, Splits, TrainConfig, TrainResult, pick_device, set_seed

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_LOSSES = {"mae": F.l1_loss, "huber": F.huber_loss, "mse": F.mse_loss}
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as trainer.fit uses them
CPU_BUDGET_BYTES = 2 * 1024**3  # per fleet on the CPU (data + activations)
# Measured (bench/results/fleet-cpu.json): on the CPU, nn.LSTM's fused oneDNN kernels at batch 64
# are compute-bound, not overhead-bound, and beat this eager batched cell per model; fleets pay on
# a GPU, where one small model leaves the device idle. Retraining uses fleets only where they pay.
FLEET_ON_CPU = False
CUDA_SHARE = 0.6  # of the device's free memory per fleet


@dataclass
class Member:
    """One model of a fleet: its data, its training settings, its initial weights."""

    splits: Splits
    config: TrainConfig
    init: dict[str, torch.Tensor] | None = None  # a RecurrentForecaster state_dict; None: built from the seed
    progress: Progress | None = None


@dataclass
class MemberResult:
    """A member's best weights (a RecurrentForecaster state_dict) and its run, or why it failed."""

    state_dict: dict[str, torch.Tensor] | None
    result: TrainResult | None
    error: Exception | None = None
    fleet_size: int = 1
    extra: dict[str, float] = field(default_factory=dict)


def initial_state(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The weights ``RecurrentForecaster(config)`` starts from after ``set_seed(seed)`` (as the single path)."""
    set_seed(seed)
    return {k: v.detach().clone() for k, v in RecurrentForecaster(config).state_dict().items()}


def fleet_pays(device: str) -> bool:
    """Whether training a group as a fleet is the faster way on ``device`` ("auto", "cpu", "cuda", ...)."""
    try:
        kind = pick_device(device).type
    except Exception:  # noqa: BLE001 - an unavailable device fails later, per series, with its message
        return False
    return kind == "cuda" or (kind == "cpu" and FLEET_ON_CPU)


def group_compatible(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two members can share a fleet (the settings one batched step needs in common)."""
    return (a.batch_size, a.loss, a.device, a.amp) == (b.batch_size, b.loss, b.device, b.amp)


# ---------------------------------------------------------------- stacked parameters


def _names(config: ModelConfig) -> list[str]:
    names = []
    for layer in range(config.num_layers):
        names += [f"rnn.weight_ih_l{layer}", f"rnn.weight_hh_l{layer}", f"rnn.bias_ih_l{layer}",
                  f"rnn.bias_hh_l{layer}"]
    return names + ["head.weight", "head.bias"]


def stack_states(config: ModelConfig, states: Sequence[dict[str, torch.Tensor]],
                 device: torch.device) -> list[torch.Tensor]:
    """The members' state_dicts stacked along a new leading axis, in ``_names`` order."""
    return [torch.stack([s[name].to(torch.float32) for s in states]).to(device).contiguous()
            for name in _names(config)]


def unstack_state(config: ModelConfig, params: Sequence[torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Member k's weights as a RecurrentForecaster state_dict (CPU, contiguous)."""
    return {name: p[k].detach().to("cpu").clone().contiguous() for name, p in zip(_names(config), params)}


class _Recurrence(torch.autograd.Function):
    """The LSTM or tanh-RNN recurrence over all steps with a hand-written backward (K stacked models).

    Autograd over the step loop records ~15 small ops per step and, for the gate
    split, concatenates gradients back per step; this runs the loop over
    preallocated time-major buffers, keeps only the activations the backward
    needs, and computes the recurrent weight gradient with one batched product
    over every step at the end (as cuDNN does). Same maths as nn.LSTM / nn.RNN.

    forward(xp (K, L, B, G): input projections with both biases, time-major; w_hh (K, G, H); cell; full)
      -> every step's h (K, L, B, H) when ``full``, else the last h (K, B, H).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.bfloat16)  # under CUDA autocast: all bf16
    def forward(ctx: Any, xp: torch.Tensor, w_hh: torch.Tensor, cell: str, full: bool) -> torch.Tensor:
        K, L, B, G = xp.shape
        H = w_hh.shape[2]
        w_t = w_hh.transpose(1, 2).contiguous()  # (K, H, G)
        acts = xp.clone()  # step t: pre-activations, then (in place) the activated gates (lstm) or h (rnn)
        hs = torch.empty(K, L + 1, B, H, dtype=xp.dtype, device=xp.device)  # hs[:, t + 1]: h after step t
        hs[:, 0].zero_()
        lstm = cell == "lstm"
        cs = torch.empty_like(hs) if lstm else None
        tcs = torch.empty(K, L, B, H, dtype=xp.dtype, device=xp.device) if lstm else None
        if cs is not None:
            cs[:, 0].zero_()
        for t in range(L):
            a = acts[:, t]
            a.baddbmm_(hs[:, t], w_t)
            if cs is not None and tcs is not None:
                a[..., : 2 * H].sigmoid_()
                a[..., 2 * H : 3 * H].tanh_()
                a[..., 3 * H :].sigmoid_()
                i, f, g, o = a.split(H, dim=-1)
                c = cs[:, t + 1]
                torch.mul(f, cs[:, t], out=c)
                c.addcmul_(i, g)
                torch.tanh(c, out=tcs[:, t])
                torch.mul(o, tcs[:, t], out=hs[:, t + 1])
            else:
                a.tanh_()
                hs[:, t + 1].copy_(a)
        ctx.cell, ctx.full = cell, full
        ctx.bufs = (w_hh, hs, acts, cs, tcs)
        return hs[:, 1:] if full else hs[:, L]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        w_hh, hs, acts, cs, tcs = ctx.bufs
        d_out = d_out.to(acts.dtype)
        K, L, B, G = acts.shape
        H = w_hh.shape[2]
        dgates = torch.empty_like(acts)
        dh = d_out.new_zeros(K, B, H) if ctx.full else d_out.clone()
        dc = d_out.new_zeros(K, B, H)
        for t in range(L - 1, -1, -1):
            if ctx.full:
                dh = dh + d_out[:, t]
            dg_t = dgates[:, t]
            if ctx.cell == "lstm":
                i, f, g, o = acts[:, t].split(H, dim=-1)
                di, df, dgg, do = dg_t.split(H, dim=-1)
                tc = tcs[:, t]
                dc = dc + dh * o * (1 - tc * tc)
                torch.mul(dh * tc, o * (1 - o), out=do)
                torch.mul(dc * g, i * (1 - i), out=di)
                torch.mul(dc * cs[:, t], f * (1 - f), out=df)
                torch.mul(dc * i, 1 - g * g, out=dgg)
                dc = dc * f
            else:
                a = acts[:, t]
                torch.mul(dh, 1 - a * a, out=dg_t)
            dh = torch.bmm(dg_t, w_hh)  # (K, B, G) @ (K, G, H)
        # dW_hh = sum over steps of dgates_t' h_{t-1}: one product over all steps.
        d_w = torch.bmm(dgates.view(K, L * B, G).transpose(1, 2), hs[:, :L].reshape(K, L * B, H))
        ctx.bufs = None
        return dgates, d_w, None, None


def forward(config: ModelConfig, params: Sequence[torch.Tensor], x: torch.Tensor,
            training: bool = False) -> torch.Tensor:
    """x (K, B, L, F) -> next-step outputs (K, B): member k's model applied to its own batch x[k].

    The same function as ``RecurrentForecaster.forward`` for each k.
    """
    K, B, L, _ = x.shape
    H = config.hidden_size
    h = x.new_zeros(K, B, H)
    if config.cell in ("lstm", "rnn"):
        seq = x.transpose(1, 2)  # time-major (K, L, B, F)
        for layer in range(config.num_layers):
            w_ih, w_hh, b_ih, b_hh = params[4 * layer : 4 * layer + 4]
            last = layer == config.num_layers - 1
            # Input projections of every step at once, both biases added: (K, L*B, F) @ (K, F, G).
            xp = torch.baddbmm((b_ih + b_hh).unsqueeze(1), seq.reshape(K, L * B, seq.shape[-1]),
                               w_ih.transpose(1, 2)).view(K, L, B, w_ih.shape[1])
            out = _Recurrence.apply(xp, w_hh, config.cell, not last)
            if last:
                h = out
            else:
                seq = out
                if training and config.dropout > 0:
                    seq = F.dropout(seq, config.dropout, training=True)
        head_w, head_b = params[-2], params[-1]  # (K, 1, H), (K, 1)
        return torch.baddbmm(head_b.unsqueeze(1), h, head_w.transpose(1, 2)).squeeze(-1)  # (K, B)
    seq = x
    for layer in range(config.num_layers):  # GRU: autograd over the step loop
        w_ih, w_hh, b_ih, b_hh = params[4 * layer : 4 * layer + 4]
        G = w_ih.shape[1]
        last = layer == config.num_layers - 1
        xp = torch.baddbmm(b_ih.unsqueeze(1), seq.reshape(K, B * L, seq.shape[-1]), w_ih.transpose(1, 2))
        steps = xp.view(K, B, L, G).unbind(2)  # unbind: one backward for all steps (indexing xp[:, :, t]
        # would allocate a zero gradient of the whole xp per step: quadratic in L)
        w_hh_t, b_hh_u = w_hh.transpose(1, 2), b_hh.unsqueeze(1)
        h = x.new_zeros(K, B, H)
        outs = []
        for t in range(L):
            hp = torch.baddbmm(b_hh_u, h, w_hh_t)  # (K, B, G)
            xr, xz, xn = steps[t].chunk(3, dim=-1)
            hr, hz, hn = hp.chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            if not last:
                outs.append(h)
        if not last:
            seq = torch.stack(outs, dim=2)  # (K, B, L, H)
            if training and config.dropout > 0:
                seq = F.dropout(seq, config.dropout, training=True)
    head_w, head_b = params[-2], params[-1]  # (K, 1, H), (K, 1)
    return torch.baddbmm(head_b.unsqueeze(1), h, head_w.transpose(1, 2)).squeeze(-1)  # (K, B)


# ---------------------------------------------------------------- sizing


def member_bytes(config: ModelConfig, window: int, n_features: int, n_windows: int, batch_size: int) -> int:
    """Rough bytes one member needs in a fleet: its data on the device plus a step's activations."""
    gates = _GATES[config.cell] * config.hidden_size
    data = n_windows * (window * n_features + 1) * 4
    # Saved for backward per step and layer: projections, gates, states (a generous factor).
    acts = batch_size * window * config.num_layers * (2 * gates + 6 * config.hidden_size) * 4
    params = sum(p.numel() for p in RecurrentForecaster(config).parameters()) * 4 * 5  # + grads + Adam + best
    return data + acts + params


def fleet_capacity(device: torch.device, per_member: int) -> int:
    """How many members of ``per_member`` bytes one fleet may hold on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * CUDA_SHARE)
    else:
        budget = CPU_BUDGET_BYTES
    return max(1, budget // max(per_member, 1))


# ---------------------------------------------------------------- training


def _pad(arrays: Sequence, device: torch.device, tail: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack arrays of different lengths (m_k, *tail) into (K, max m, *tail), zero-padded; and the lengths."""
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    out = torch.zeros((len(arrays), int(lengths.max()), *tail), dtype=torch.float32)
    for k, a in enumerate(arrays):
        out[k, : len(a)] = torch.as_tensor(a, dtype=torch.float32)
    return out.to(device), lengths.to(device)


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None  # no fp16 scaler per member: fp32


@torch.no_grad()
def _member_losses(config: ModelConfig, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   lengths: torch.Tensor, loss: str, amp: torch.dtype | None, chunk: int = 4096) -> torch.Tensor:
    """Mean loss per member (K,) over each member's first lengths[k] rows of x (K, M, L, F)."""
    K, M = y.shape
    total = torch.zeros(K, device=y.device)
    for i in range(0, M, chunk):
        with torch.autocast(y.device.type, dtype=amp, enabled=amp is not None):
            pred = forward(config, params, x[:, i : i + chunk]).float()
        rows = torch.arange(i, i + pred.shape[1], device=y.device)
        mask = rows[None, :] < lengths[:, None]
        elem = _LOSSES[loss](pred, y[:, i : i + chunk], reduction="none")
        total += torch.where(mask, elem, 0.0).sum(dim=1)
    return total / lengths.clamp(min=1)


def fit_fleet(config: ModelConfig, members: Sequence[Member], *, max_size: int | None = None) -> list[MemberResult]:
    """Train every member; members beyond one fleet's capacity go to the next fleet.

    Never raises for one member's trouble: a member whose loss diverged comes
    back with ``error`` set (TrainingDiverged naming the epoch) and no weights.

    Raises:
        ValueError: if the members cannot share a fleet (different batch size, loss,
            device or amp; different window or features; an empty validation split).
        TrainingError: if the device is unavailable.
    """
    if not members:
        return []
    first = members[0]
    for m in members:
        if not group_compatible(first.config, m.config):
            raise ValueError("fleet members need the same batch_size, loss, device and amp")
        if m.splits.x_train.shape[1:] != first.splits.x_train.shape[1:]:
            raise ValueError(f"fleet members need the same window and features: "
                             f"{m.splits.x_train.shape[1:]} vs {first.splits.x_train.shape[1:]}")
        if len(m.splits.y_val) == 0:
            raise ValueError("early stopping needs a non-empty validation split")
    device = pick_device(first.config.device)
    L, Fin = first.splits.x_train.shape[1:]
    most = max(len(m.splits.y_train) + len(m.splits.y_val) for m in members)
    size = fleet_capacity(device, member_bytes(config, L, Fin, most, first.config.batch_size))
    size = min(size, max_size or size)
    results: list[MemberResult] = []
    for i in range(0, len(members), size):
        results += _fit_one_fleet(config, members[i : i + size], device)
    return results


def _fit_one_fleet(config: ModelConfig, members: Sequence[Member], device: torch.device) -> list[MemberResult]:
    t0 = time.perf_counter()
    K = len(members)
    cfgs = [m.config for m in members]
    B, loss_name = cfgs[0].batch_size, cfgs[0].loss
    amp = _amp_dtype(device, cfgs[0].amp)
    L, Fin = members[0].splits.x_train.shape[1:]
    xt, mt = _pad([m.splits.x_train for m in members], device, (L, Fin))
    yt, _ = _pad([m.splits.y_train for m in members], device, ())
    xv, mv = _pad([m.splits.x_val for m in members], device, (L, Fin))
    yv, _ = _pad([m.splits.y_val for m in members], device, ())
    m_train = [len(m.splits.y_train) for m in members]
    n_batches = [math.ceil(n / B) for n in m_train]

    states = [m.init if m.init is not None else initial_state(config, c.seed) for m, c in zip(members, cfgs)]
    params = stack_states(config, states, device)  # master copies: (K, ...)
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    steps = torch.zeros(K, device=device)
    best_params = [p.clone() for p in params]
    lr = torch.tensor([c.lr for c in cfgs], device=device)
    clip = torch.tensor([c.grad_clip for c in cfgs], device=device)
    gens = [torch.Generator(device=device).manual_seed(c.seed) for c in cfgs]
    set_seed(cfgs[0].seed)  # dropout draws (the only other randomness)

    best = [math.inf] * K
    best_epoch, stale, epochs_run = [0] * K, [0] * K, [0] * K
    running = [True] * K
    errors: list[Exception | None] = [None] * K
    epoch = 0
    while True:
        epoch += 1
        live_list = [k for k in range(K) if running[k] and epoch <= cfgs[k].epochs]
        for k in range(K):
            if running[k] and epoch > cfgs[k].epochs:
                running[k] = False
        if not live_list:
            break
        live = torch.tensor(live_list, device=device)
        n_live = len(live_list)
        # Working leaves for this epoch: the live members' rows (stopped members cost nothing).
        work = [p[live].clone().requires_grad_(True) for p in params]
        m1 = [s[live] for s in exp_avg]
        m2 = [s[live] for s in exp_avg_sq]
        st = steps[live]
        lr_l, clip_l = lr[live], clip[live]
        S = max(n_batches[k] for k in live_list)
        idx = torch.zeros(n_live, S * B, dtype=torch.long, device=device)
        for j, k in enumerate(live_list):
            idx[j, : m_train[k]] = torch.randperm(m_train[k], generator=gens[k], device=device)
        valid = torch.arange(S * B, device=device)[None, :] < mt[live][:, None]  # (n_live, S*B)
        idx, valid = idx.view(n_live, S, B), valid.view(n_live, S, B)
        nb = torch.tensor([n_batches[k] for k in live_list], device=device)
        total = torch.zeros(n_live, device=device)
        rows = live[:, None]
        for s in range(S):
            bi, bm = idx[:, s], valid[:, s]  # (n_live, B)
            active = nb > s  # members that still have a batch this epoch
            count = bm.sum(dim=1)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                pred = forward(config, work, xt[rows, bi], training=True).float()  # (n_live, B)
            elem = _LOSSES[loss_name](pred, yt[rows, bi], reduction="none")
            per = torch.where(bm, elem, 0.0).sum(dim=1) / count.clamp(min=1)  # (n_live,)
            per = torch.where(active, per, 0.0)
            grads = torch.autograd.grad(per.sum(), work)
            with torch.no_grad():
                _adam_step(work, grads, m1, m2, st, active, lr_l, clip_l)
                total += per.detach() * count
        with torch.no_grad():
            val = _member_losses(config, work, xv[live], yv[live], mv[live], loss_name, amp)
            train_loss = total / mt[live].clamp(min=1)
            tl, vl = torch.stack([train_loss, val]).tolist()  # one sync per epoch
            improved = []
            for j, k in enumerate(live_list):
                epochs_run[k] = epoch
                t_k, v_k = tl[j], vl[j]
                if not (math.isfinite(t_k) and math.isfinite(v_k)):
                    errors[k] = TrainingDiverged(
                        f"loss became {t_k if not math.isfinite(t_k) else v_k} at epoch {epoch} of "
                        f"{cfgs[k].epochs} (lr {cfgs[k].lr}, grad_clip {cfgs[k].grad_clip}); "
                        "try a lower lr or clipping")
                    running[k] = False
                    continue
                progress = members[k].progress
                if progress is not None:
                    progress(epoch, cfgs[k].epochs, v_k)
                if v_k < best[k]:
                    best[k], best_epoch[k], stale[k] = v_k, epoch, 0
                    improved.append(j)
                else:
                    stale[k] += 1
                    if stale[k] >= cfgs[k].patience:
                        running[k] = False  # frozen: its best weights stay; the fleet goes on
            for p, w in zip(params, work):
                p[live] = w.detach()
            for s_all, s_live in zip(exp_avg, m1):
                s_all[live] = s_live
            for s_all, s_live in zip(exp_avg_sq, m2):
                s_all[live] = s_live
            steps[live] = st
            if improved:
                sel = torch.tensor(improved, device=device)
                for b_all, w in zip(best_params, work):
                    b_all[live[sel]] = w.detach()[sel]
    duration = time.perf_counter() - t0
    out = []
    for k in range(K):
        if errors[k] is not None:
            out.append(MemberResult(None, None, errors[k], fleet_size=K))
            continue
        result = TrainResult(best_val_loss=best[k], epochs_run=epochs_run[k], best_epoch=best_epoch[k],
                             device=str(device), duration_s=duration / K)
        out.append(MemberResult(unstack_state(config, best_params, k), result, None, fleet_size=K,
                                extra={"fleet_duration_s": duration}))
    return out


def _adam_step(params: list[torch.Tensor], grads: Sequence[torch.Tensor], exp_avg: list[torch.Tensor],
               exp_avg_sq: list[torch.Tensor], steps: torch.Tensor, active: torch.Tensor,
               lr: torch.Tensor, clip: torch.Tensor) -> None:
    """Per-member gradient-norm clipping and Adam (torch.optim.Adam's update), only where ``active``."""
    K = active.shape[0]
    norms = torch.zeros(K, device=active.device)
    for g in grads:
        norms += g.reshape(K, -1).float().pow(2).sum(dim=1)
    norms = norms.sqrt()
    coef = torch.where(clip > 0, (clip / (norms + 1e-6)).clamp(max=1.0), 1.0)  # as clip_grad_norm_
    steps += active.to(steps.dtype)
    step = steps.clamp(min=1).double()  # bias corrections in float64, as Adam's Python scalars
    step_size = (lr.double() / (1 - _BETA1**step)).float()
    bc2_sqrt = (1 - _BETA2**step).sqrt().float()
    for i, (p, g) in enumerate(zip(params, grads)):
        shape = (K,) + (1,) * (p.dim() - 1)
        g = g * coef.view(shape)
        act = active.view(shape)
        m = torch.where(act, exp_avg[i].lerp(g, 1 - _BETA1), exp_avg[i])
        v = torch.where(act, exp_avg_sq[i] * _BETA2 + (1 - _BETA2) * g * g, exp_avg_sq[i])
        exp_avg[i], exp_avg_sq[i] = m, v
        denom = v.sqrt() / bc2_sqrt.view(shape) + _EPS
        update = (m / denom) * step_size.view(shape)
        p.sub_(torch.where(act, update, 0.0))
