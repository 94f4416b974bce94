"""Fleet training: every member trained as if alone, K of them advanced by one batched step.

Each member keeps its own data and splits (padded to the longest, masked), initial weights (built
by ``RecurrentForecaster`` from its seed), batch order (its own seeded generator), learning rate,
Adam state and step count, gradient-norm clipping, early stopping (a member whose patience runs out
is frozen at its best weights while the others go on), epoch budget and divergence check (a member
whose loss turns NaN fails alone). Adam and clipping run on one (K, P) row per member, as
``torch.optim.Adam`` and ``clip_grad_norm_`` would for each. A member's weights come back as exactly
the ``state_dict`` of ``RecurrentForecaster``, so what is stored cannot tell how it was trained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from forecaster.errors import TrainingDiverged
from forecaster.modelling.fleet.recurrence import (
    RecurrenceBuffers,
    forward,
    stack_states,
    unstack_state,
)
from forecaster.modelling.fleet.sizing import (
    CPU_MAX_MEMBERS,
    cpu_bf16,
    fleet_capacity,
    member_bytes,
)
from forecaster.modelling.network import ModelConfig, RecurrentForecaster
from forecaster.modelling.training import (
    Progress,
    Splits,
    TrainConfig,
    TrainResult,
    pick_device,
    set_seed,
)

_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mae": F.l1_loss, "huber": F.huber_loss, "mse": F.mse_loss}
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as modelling.training.fit uses them


@dataclass
class Member:
    """One model of a fleet: its data and its training settings (its initial weights come from the
    seed, or are ``init``: a warm start, whose weights stay unless an epoch beats them)."""

    splits: Splits
    config: TrainConfig
    progress: Progress | None = None
    init: dict[str, torch.Tensor] | None = None


@dataclass
class MemberResult:
    """A member's best weights (a RecurrentForecaster state_dict) and its run, or why it failed."""

    state_dict: dict[str, torch.Tensor] | None
    result: TrainResult | None
    error: Exception | None = None
    fleet_size: int = 1


def initial_state(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The weights ``RecurrentForecaster(config)`` starts from after ``set_seed(seed)`` (as the single path)."""
    set_seed(seed)
    return {k: v.detach().clone() for k, v in RecurrentForecaster(config).state_dict().items()}


def group_compatible(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two members can share a fleet (the settings one batched step needs in common)."""
    return (a.batch_size, a.loss, a.device, a.amp) == (b.batch_size, b.loss, b.device, b.amp)


def _pad(arrays: Sequence[np.ndarray], device: torch.device,
         tail: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
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
    K, M = y.shape[:2]
    total = torch.zeros(K, device=y.device)
    for i in range(0, M, chunk):
        with torch.autocast(y.device.type, dtype=amp, enabled=amp is not None):
            pred = forward(config, params, x[:, i : i + chunk]).float()
        rows = torch.arange(i, i + pred.shape[1], device=y.device)
        mask = rows[None, :] < lengths[:, None]
        elem = _LOSSES[loss](pred, y[:, i : i + chunk], reduction="none")
        if elem.ndim == 3:  # paths: a window's loss is its mean over the steps
            elem = elem.mean(dim=2)
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
    if device.type == "cpu":
        size = min(size, CPU_MAX_MEMBERS)
    results: list[MemberResult] = []
    for i in range(0, len(members), size):
        results += _fit_one_fleet(config, members[i : i + size], device)
    return results


def _fit_one_fleet(config: ModelConfig, members: Sequence[Member], device: torch.device) -> list[MemberResult]:
    t0 = time.perf_counter()
    K = len(members)
    cfgs = [m.config for m in members]
    B, loss_name = cfgs[0].batch_size, cfgs[0].loss
    amp = _amp_dtype(device, cfgs[0].amp)  # CUDA: autocast
    lowp = cpu_bf16(device, cfgs[0].amp, config.cell)  # CPU: bfloat16 products in the recurrence
    L, Fin = members[0].splits.x_train.shape[1:]
    xt, mt = _pad([m.splits.x_train for m in members], device, (L, Fin))
    tail = tuple(members[0].splits.y_train.shape[1:])  # (): one step; (h,): paths
    yt, _ = _pad([m.splits.y_train for m in members], device, tail)
    xv, mv = _pad([m.splits.x_val for m in members], device, (L, Fin))
    yv, _ = _pad([m.splits.y_val for m in members], device, tail)
    m_train = [len(m.splits.y_train) for m in members]
    n_batches = [math.ceil(n / B) for n in m_train]

    states = [m.init if m.init is not None else initial_state(config, m.config.seed) for m in members]
    stacked = stack_states(config, states, device)
    shapes = [p.shape[1:] for p in stacked]
    # Master copies, every parameter of a member in one row (K, P): Adam and clipping are a few ops per step.
    params = torch.cat([p.reshape(K, -1) for p in stacked], dim=1)
    exp_avg = torch.zeros_like(params)
    exp_avg_sq = torch.zeros_like(params)
    steps = torch.zeros(K, dtype=torch.float64, device=device)
    best_params = params.clone()
    workspace = RecurrenceBuffers()
    lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64, device=device)  # Python floats, as Adam's
    clip = torch.tensor([c.grad_clip for c in cfgs], device=device)
    gens = [torch.Generator(device=device).manual_seed(c.seed) for c in cfgs]
    set_seed(cfgs[0].seed)  # dropout draws (the only other randomness)

    best = [math.inf] * K
    warm = [k for k in range(K) if members[k].init is not None and cfgs[k].warm]
    if warm:  # a warm member's starting weights are its best until an epoch beats them (epoch 0)
        with torch.no_grad():
            start = _member_losses(config, _split(params, shapes), xv, yv, mv, loss_name, amp).tolist()
        for k in warm:
            if math.isfinite(start[k]):
                best[k] = start[k]
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
        # This epoch's working copies: the live members' rows (stopped members cost nothing); the
        # leaves autograd differentiates are views of ``work``, which Adam updates in place.
        work = params[live]
        leaves = [v.detach().requires_grad_(True) for v in _split(work, shapes)]
        m1, m2 = exp_avg[live], exp_avg_sq[live]
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
        least = min(n_batches[k] for k in live_list)
        for s in range(S):
            bi, bm = idx[:, s], valid[:, s]  # (n_live, B)
            active = None if s < least else nb > s  # members that still have a batch this epoch (None: all)
            count = bm.sum(dim=1)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                pred = forward(config, leaves, xt[rows, bi], training=True, workspace=workspace,
                               lowp=lowp).float()
            elem = _LOSSES[loss_name](pred, yt[rows, bi], reduction="none")  # (n_live, B) or (n_live, B, h)
            if elem.ndim == 3:
                elem = elem.mean(dim=2)
            per = torch.where(bm, elem, 0.0).sum(dim=1) / count.clamp(min=1)  # (n_live,)
            if active is not None:
                per = torch.where(active, per, 0.0)
            grads = torch.autograd.grad(per.sum(), leaves)
            with torch.no_grad():
                grad = torch.cat([g.reshape(n_live, -1) for g in grads], dim=1)
                _adam_step(work, grad, m1, m2, st, active, lr_l, clip_l)
                total += per.detach() * count
        with torch.no_grad():
            val = _member_losses(config, _split(work, shapes), xv[live], yv[live], mv[live], loss_name, amp)
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
            params[live], exp_avg[live], exp_avg_sq[live], steps[live] = work, m1, m2, st
            if improved:
                sel = torch.tensor(improved, device=device)
                best_params[live[sel]] = work[sel]
    duration = time.perf_counter() - t0
    out = []
    for k in range(K):
        if errors[k] is not None:
            out.append(MemberResult(None, None, errors[k], fleet_size=K))
            continue
        result = TrainResult(best_val_loss=best[k], epochs_run=epochs_run[k], best_epoch=best_epoch[k],
                             device=str(device), duration_s=duration / K)
        out.append(MemberResult(unstack_state(config, _split(best_params, shapes), k), result, None, fleet_size=K))
    return out


def _split(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Views of the (K, P) rows as the stacked parameters (K, *shape), in ``_names`` order."""
    out, at = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[:, at : at + n].view(flat.shape[0], *shape))
        at += n
    return out


def _adam_step(params: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
               steps: torch.Tensor, active: torch.Tensor | None, lr: torch.Tensor, clip: torch.Tensor) -> None:
    """Per-member gradient-norm clipping and Adam (torch.optim.Adam's update) on (K, P) rows, in place.

    ``active`` (K,) bool: only those members step (the others' rows stay as they are); None: all do.
    """
    norms = grad.square().sum(dim=1).sqrt()
    coef = torch.where(clip > 0, (clip / (norms + 1e-6)).clamp(max=1.0), 1.0)  # as clip_grad_norm_
    grad.mul_(coef[:, None])
    if active is None:
        steps += 1
    else:
        steps += active.to(steps.dtype)
        old = params.clone(), exp_avg.clone(), exp_avg_sq.clone()
    step = steps.clamp(min=1)  # bias corrections in float64, as Adam's Python scalars
    step_size = (lr / (1 - _BETA1**step)).float()[:, None]
    bc2_sqrt = (1 - _BETA2**step).sqrt().float()[:, None]
    exp_avg.lerp_(grad, 1 - _BETA1)
    exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(_EPS)
    params.sub_((exp_avg / denom).mul_(step_size))
    if active is not None:
        keep = ~active[:, None]
        for now, before in zip((params, exp_avg, exp_avg_sq), old, strict=True):
            now.copy_(torch.where(keep, before, now))
