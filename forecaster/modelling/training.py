"""The torch training loop: seeded, device-resident mini-batches, early stopping, clipping.

The whole data set is moved to the device once; each epoch draws one seeded
``torch.randperm`` on the device and takes batches by index, so there is no
DataLoader and no per-window Python work. On CPU, the same data, config and
seed give bit-identical weights.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from forecaster.errors import TrainingDiverged, TrainingError

Progress = Callable[[int, int, float], None]  # (epoch, epochs, val_loss)
_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mae": F.l1_loss,
    "huber": F.huber_loss,
    "mse": F.mse_loss,
}


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-3
    batch_size: int = 64
    epochs: int = 60  # at most; early stopping usually ends sooner
    patience: int = 8  # epochs without a better validation loss before stopping
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    loss: Literal["mae", "huber", "mse"] = "mae"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = False  # CUDA only: bf16 autocast (fp16 + GradScaler where bf16 is missing)
    warm: bool = False  # the model starts from trained weights: they stay unless an epoch beats them


@dataclass(frozen=True)
class Splits:
    """Normalised float32 arrays: x (m, L, F), y (m,) for training and validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    best_val_loss: float
    epochs_run: int
    best_epoch: int
    device: str
    duration_s: float
    initial_val_loss: float | None = None  # the weights' validation loss before the first epoch


def set_seed(seed: int) -> None:
    """Seed Python's and torch's generators (CPU and every CUDA device)."""
    random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist.

    Raises:
        TrainingError: if the named device is not available here.
    """
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise TrainingError(f"device {name!r} is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(name)


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None  # autocast only where it pays: CUDA
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def _val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[..., torch.Tensor],
              amp: torch.dtype | None, chunk: int = 8192) -> float:
    model.eval()
    total = torch.zeros((), device=y.device)
    for i in range(0, len(y), chunk):  # chunks only bound memory; usually one pass
        with torch.autocast(y.device.type, dtype=amp, enabled=amp is not None):
            pred = model(x[i : i + chunk]).float()
        total += loss_fn(pred, y[i : i + chunk]) * len(pred)
    return total.item() / len(y)


def fit(model: nn.Module, data: Splits, cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train ``model`` in place; on return it holds the best validation weights.

    Raises:
        TrainingDiverged: when a training or validation loss is NaN or infinite,
            naming the epoch.
        TrainingError: if the device is unavailable.
        ValueError: if the validation split is empty.
    """
    if len(data.y_val) == 0:
        raise ValueError("early stopping needs a non-empty validation split")
    t0 = time.perf_counter()
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    # cuDNN stays on; cudnn.benchmark stays off (torch's default) so runs repeat.
    xt, yt, xv, yv = (torch.as_tensor(a, device=device) for a in
                      (data.x_train, data.y_train, data.x_val, data.y_val))  # once, whole set
    loss_fn = _LOSSES[cfg.loss]
    amp = _amp_dtype(device, cfg.amp)
    grad_scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    best, best_epoch, stale = math.inf, 0, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    initial = _val_loss(model, xv, yv, loss_fn, amp)  # a warm start's is its champion's; a cold one's, chance's
    if cfg.warm and math.isfinite(initial):
        best = initial  # epoch 0: the starting weights serve unless training beats them
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        order: torch.Tensor = torch.randperm(len(yt), generator=gen, device=device)
        for idx in torch.split(order, cfg.batch_size):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                pred = model(xt[idx]).float()  # (B, L, F) -> (B,)
            loss = loss_fn(pred, yt[idx])
            opt.zero_grad(set_to_none=True)
            scaled: torch.Tensor = grad_scaler.scale(loss)
            torch.autograd.backward(scaled)
            if cfg.grad_clip:
                grad_scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            grad_scaler.step(opt)
            grad_scaler.update()
            total += loss.detach() * len(idx)  # summed on the device: no sync per batch
        train_loss = total.item() / len(yt)
        val = _val_loss(model, xv, yv, loss_fn, amp)
        if not (math.isfinite(train_loss) and math.isfinite(val)):
            raise TrainingDiverged(
                f"loss became {train_loss if not math.isfinite(train_loss) else val} at epoch "
                f"{epoch} of {cfg.epochs} (lr {cfg.lr}, grad_clip {cfg.grad_clip}); "
                "try a lower lr or clipping"
            )
        if progress is not None:
            progress(epoch, cfg.epochs, val)
        if val < best:
            best, best_epoch, stale = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif (stale := stale + 1) >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_val_loss=best, epochs_run=epoch, best_epoch=best_epoch,
                       device=str(device), duration_s=time.perf_counter() - t0, initial_val_loss=initial)
