"""Fleet training: K separate recurrent models of one shape, advanced together in one batched pass.

Training one small LSTM per series leaves most of a GPU idle and, on the CPU,
runs its products at about half the CPU's float32 matrix peak (~55 of ~114
GFLOP/s here). A fleet stacks the parameters of K models along a leading axis
and runs the recurrence with batched matrix products (``torch.bmm`` over K
stacked matrices), so one step
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
``forecaster.modelling.network.RecurrentForecaster``, so what is stored cannot tell how it
was trained. Extra input channels (calendar or other features) are just a wider
last axis: the fleet is generic over the input size.

LSTM and RNN run the recurrence in ``_Recurrence``: a hand-written backward over
time-major buffers, one product per step over [x; 1; h], tanh as 2·sigmoid(2a) - 1
(torch's CPU tanh costs ~10x its sigmoid), the backward's factors formed in the
forward while they are in cache, buffers reused between training steps (a
``Workspace``), and Adam plus clipping on one (K, P) row per member. GRU runs
autograd over the step loop.

Equivalence: the same maths as ``trainer.fit`` with nn.LSTM/GRU/RNN, but not the
same kernels, so a fleet of one matches the per-series path to float32 rounding
(tests/test_fleet.py states the tolerance), not bit for bit: after 4 epochs at most
7e-7; after 25 at most 1.1e-6 for LSTM and GRU, 2e-5 for a one-layer RNN, whose
training amplifies rounding (3e-7, 9e-7, 4e-6, 2e-5 after 4, 8, 15, 25 epochs; the
previous kernels' rounding grew to 2.3e-6).
``ModelSpec.amp`` on the CPU (opt-in; the per-series path ignores it there) gives the
LSTM/RNN recurrence bfloat16 operands in its products where the CPU multiplies bf16
natively (``cpu_bf16``): gradients within bf16 rounding of float32, holdout MASE
0.97-1.03x of training alone on the 18 bundled real slices (median 1.000).

Where it pays, measured on this project's 2-core AMD EPYC (Zen 5, AVX-512 + BF16),
torch 2.13, 1 thread, another session's tests running alongside (load ~3):

- One training step (forward, backward, clipping, Adam; batch 64, window 48,
  hidden 32) per model against nn.LSTM + Adam alone (1.43-1.45 ms), two runs of
  ``bench/fleet.py --micro 16,64,256`` (bench/results/fleet-step-cpu.json):
  float32 K=16 0.92-0.95x, K=64 1.01-1.02x, K=256 0.85-0.88x;
  bf16 products K=16 1.28-1.29x, K=64 1.66-1.68x, K=256 1.27-1.49x (one fleet of 256).
- End to end, 2 epochs of K series of 2,000 points (``bench/fleet.py --ks 1,16,64,256
  --epochs 2 --max-one-by-one 64``, two runs; K=256 one by one extrapolated):
  float32 K=1 0.37-0.43x, K=16 1.02-1.12x, K=64 1.02-1.12x, K=256 1.04-1.07x
  (bench/results/fleet-cpu.json); with ``--amp`` K=1 0.30-0.31x, K=16 1.24-1.49x,
  K=64 1.47-1.54x, K=256 1.52-1.65x (bench/results/fleet-cpu-amp.json).
- The bound: a step's products are ~78 MFLOP per model (per time step 2·B·(F+1+H)·4H
  forward, 2·B·4H·H for dh, 2·B·(F+1+H)·4H for the weight gradients); the batched
  float32 products run at ~90-100 GFLOP/s here (sgemm peak ~114), so float32 products
  alone take ~0.8 ms per model against 1.44 ms for the whole per-series step: at most
  ~1.8x with free elementwise work, ~1.0x with eager torch's (~0.5 ms per model).
  bf16 products run at ~290-350 GFLOP/s (~0.25 ms per model); the eager elementwise
  work and the bf16 conversions then bound it (~0.85 ms per model at K=64).
  The issue's 5x at K=64 would need ≤0.29 ms per model: not reachable in float32 at
  all, and in bf16 only with the elementwise work fused (torch.compile of the cell
  alone took 13 s to compile here, too slow for this project's tests and CLI).

So retraining keeps the per-series loop on the CPU (``FLEET_ON_CPU`` off): in float32
the fleet is no faster, and with amp it is 1.5x from 64 members but not reliably
1.3x at 16, and it is slower for small groups (0.3-0.4x for one member).

Memory: ``fleet_capacity`` sizes a fleet to a byte budget (CUDA: a share of the
free device memory; CPU: a fixed budget, and at most ``CPU_MAX_MEMBERS``), and
``fit_fleet`` splits larger groups into consecutive fleets (so the end-to-end K=256
above is four fleets of 64; the step micro's K=256 is one fleet). Peak RSS of the
benchmark process: fleet 955 MB at K=64 against 740 MB one by one.
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
from forecaster.modelling.network import ModelConfig, RecurrentForecaster
from forecaster.modelling.training import Progress, Splits, TrainConfig, TrainResult, pick_device, set_seed

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_LOSSES = {"mae": F.l1_loss, "huber": F.huber_loss, "mse": F.mse_loss}
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as trainer.fit uses them
CPU_BUDGET_BYTES = 2 * 1024**3  # per fleet on the CPU (data + activations)
# Per model a CPU fleet step costs the same from 32 to 128 members and ~15 % more at 256 (its buffers,
# ~3 MB per member, no longer fit the caches): larger groups train as consecutive fleets of this size.
CPU_MAX_MEMBERS = 64
# Measured (module docstring; bench/results/fleet-cpu*.json): on the CPU a float32 fleet is ~1.0x the
# per-series loop (its products alone cost ~0.8 of the 1.44 ms per-series step), bf16 products (amp)
# 1.2-1.5x at 16 members and 1.5x from 64, 0.3x for one; fleets pay on a GPU, where one small model
# leaves the device idle. Retraining uses fleets only where they pay.
FLEET_ON_CPU = False  # float32 fleets on the CPU (amp fleets of CPU_MIN_MEMBERS or more: see fleet_pays)
CPU_MIN_MEMBERS = 16  # below this a bf16 CPU fleet is not reliably faster (one member: 0.3x)
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


def fleet_pays(device: str, *, amp: bool = False, cell: str = "lstm", size: int | None = None) -> bool:
    """Whether training a group of ``size`` members as a fleet is the faster way on ``device``.

    A GPU: always. The CPU: with ``FLEET_ON_CPU``, or for an LSTM/RNN group of at least
    ``CPU_MIN_MEMBERS`` with ``amp`` on a CPU that multiplies bfloat16 natively (1.2-1.7x
    measured); a float32 fleet is no faster there. ``size`` None: could any group pay.
    """
    try:
        dev = pick_device(device)
    except Exception:  # noqa: BLE001 - an unavailable device fails later, per series, with its message
        return False
    if dev.type == "cuda":
        return True
    if dev.type != "cpu":
        return False
    if FLEET_ON_CPU:
        return True
    return cpu_bf16(dev, amp, cell) is not None and (size is None or size >= CPU_MIN_MEMBERS)


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


_PERM: dict[tuple[str, int, torch.device], torch.Tensor] = {}


def _gate_perm(cell: str, H: int, device: torch.device) -> torch.Tensor:
    """Row order of the recurrence's internal gate layout: LSTM (o, i, f, g) from torch's (i, f, g, o),
    so the three sigmoid gates are one block and the input-side gates (i, f, g) a contiguous tail."""
    key = (cell, H, device)
    if key not in _PERM:
        blocks = (3, 0, 1, 2) if cell == "lstm" else (0,)
        _PERM[key] = torch.cat([torch.arange(b * H, (b + 1) * H) for b in blocks]).to(device)
    return _PERM[key]


class _Workspace:
    """Buffers of one layer's recurrence, kept from one training step to the next."""

    def __init__(self) -> None:
        self.bufs: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or like.dtype
        b = self.bufs.get(name)
        if b is None or b.shape != shape or b.dtype != dtype or b.device != like.device:
            b = self.bufs[name] = like.new_empty(shape, dtype=dtype)
        return b


class Workspace:
    """The recurrence buffers of a training loop (one per layer); one forward and its backward at a time."""

    def __init__(self) -> None:
        self.layers: dict[int, _Workspace] = {}

    def layer(self, i: int) -> _Workspace:
        return self.layers.setdefault(i, _Workspace())


class _Recurrence(torch.autograd.Function):
    """The LSTM or tanh-RNN recurrence of K stacked models over all steps, with a hand-written backward.

    forward(x (L, K, F, B) time-major and feature-major, w_ih (K, G, F), w_hh (K, G, H), b_ih, b_hh (K, G),
            cell, full, train, ws, lowp) -> every step's h (L, K, H, B) when ``full``, else the last (K, H, B).

    Layout: time-major, then member, then feature, then batch: a step's slice is contiguous and each
    gate of a member is one contiguous run of H·B values, so every elementwise op runs over long
    contiguous runs (feature-last, runs of H = 32, cost ~1.5x; broadcasts over gates ~4x).

    Built for the CPU, where per-op overhead and memory traffic decide; the same code runs on CUDA:

    - One product per step: [W_ih, b_ih + b_hh, W_hh] times [x_t; 1; h_{t-1}] (a buffer whose h rows
      each step writes) gives the pre-activations with both biases; the backward gets
      dW_ih, the bias gradient and dW_hh from one accumulated product per step over the same buffer.
    - Every step's slice of every buffer is contiguous (time-major); nothing is cloned per step, and
      with a workspace (``ws``) the buffers are reused from one training step to the next.
    - tanh is computed as 2·sigmoid(2a) - 1 (torch's CPU tanh costs ~10x its sigmoid): the g rows of
      the stacked weights are doubled (exact in binary floating point) so one sigmoid covers all four
      gates, and the cell state is carried doubled (2c, exact too).
    - Training (``train``): right after a step the forward turns the activated gates, in place, into
      the factors the backward multiplies by (o·(1-o)·tanh c; 2·g·i·(1-i), 2·c_prev·f·(1-f),
      2·i·(1-g²)), keeps o·(1-tanh²c) and f, and drops c and tanh c; the backward per step is then one
      product for dh, two ops for dc, two for the gate gradients and one product for the weight
      gradients. It writes the gate gradients over the factors, so it runs once (autograd.grad or
      backward without retain_graph, as training does).
    - ``lowp`` (torch.bfloat16, opt-in): the three products per step take bfloat16 operands (the
      [x; 1; h] buffer is kept in bfloat16, the gate gradients are rounded to it once per step);
      everything else, the cell state and the weight-gradient sums stay float32.
    Same maths as nn.LSTM / nn.RNN (float32: to rounding, tests/test_fleet.py).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.bfloat16)  # under CUDA autocast: all bf16
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                b_hh: torch.Tensor, cell: str, full: bool, train: bool, ws: _Workspace | None,
                lowp: torch.dtype | None) -> torch.Tensor:
        L, K, Fi, B = x.shape
        take = ws.take if ws is not None else (lambda _name, shape, like, dtype=None: like.new_empty(
            shape, dtype=dtype or like.dtype))
        G, H = w_hh.shape[1], w_hh.shape[2]
        C = Fi + 1 + H  # rows of the step input [x_t; 1; h_{t-1}]
        lstm = cell == "lstm"
        perm = _gate_perm(cell, H, x.device)
        w_ih_p, w_hh_p = w_ih[:, perm], w_hh[:, perm]
        W = torch.cat([w_ih_p, (b_ih + b_hh)[:, perm].unsqueeze(2), w_hh_p], dim=2)  # (K, G, C)
        if lstm:
            W[:, 3 * H :] *= 2  # g: tanh(a) = 2·sigmoid(2a) - 1
        else:
            W *= 2
        XH = take("xh", (L + 1, K, C, B), x, lowp)
        XH[:L, :, :Fi] = x
        XH[:, :, Fi] = 1.0
        XH[0, :, Fi + 1 :] = 0.0
        hs = XH[:, :, Fi + 1 :]  # hs[t + 1]: h after step t
        A = take("gates", (L if train else 1, K, G, B), x)  # training: every step's gates (then factors)
        if lowp is not None:
            W = W.to(lowp)
            a_low = take("a_low", (K, G, B), x, lowp)
        h32 = x.new_empty(K, H, B) if lowp is not None else None  # h in float32 (the buffer holds bf16)
        one = x.new_ones(())
        E = Fk = None
        if lstm:
            c2 = x.new_zeros(K, H, B)  # 2·c
            gi2, fc2, tc = (x.new_empty(K, H, B) for _ in range(3))
            if train:
                E = take("e", (L, K, H, B), x)  # o·(1 - tanh²c)
                Fk = take("f", (L, K, H, B), x)  # f
        for t in range(L):
            a = A[t if train else 0]
            if lowp is None:
                torch.bmm(W, XH[t], out=a)
            else:
                torch.bmm(W, XH[t], out=a_low)
                a.copy_(a_low)
            a.sigmoid_()
            h = hs[t + 1] if h32 is None else h32
            if lstm:
                o, i, f, g2 = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
                g2.mul_(4).sub_(2)  # 2·g = 2·tanh(a_g)
                torch.mul(g2, i, out=gi2)  # 2·i·g
                torch.mul(f, c2, out=fc2)  # 2·f·c_prev
                torch.add(fc2, gi2, out=c2)  # 2·c
                torch.sigmoid(c2, out=tc)
                tc.mul_(2).sub_(1)  # tanh c
                torch.mul(o, tc, out=h)
                if h32 is not None:
                    hs[t + 1].copy_(h32)
                if E is not None and Fk is not None:
                    torch.addcmul(o, h, tc, value=-1, out=E[t])  # o·(1 - tanh²c)
                    Fk[t].copy_(f)
                    torch.addcmul(fc2, fc2, f, value=-1, out=f)  # 2·c_prev·f·(1-f)
                    torch.addcmul(i, gi2, g2, value=-0.25, out=g2)  # i·(1-g²) ...
                    g2.mul_(2)  # ... doubled
                    torch.addcmul(gi2, gi2, i, value=-1, out=i)  # 2·g·i·(1-i)
                    torch.addcmul(o, o, o, value=-1, out=o)  # o·(1-o) ...
                    o.mul_(tc)  # ... ·tanh c
            else:
                torch.mul(a, 2, out=h)
                h.sub_(1)  # tanh
                if h32 is not None:
                    hs[t + 1].copy_(h32)
                if train:
                    torch.addcmul(one, h, h, value=-1, out=a)  # 1 - h²
        if train:
            ctx.cell, ctx.full, ctx.shape, ctx.lowp = cell, full, (L, K, B, Fi, H), lowp
            ctx.bufs = (XH, A, w_ih_p, w_hh_p, perm, *((E, Fk) if lstm else ()))
            ctx.take = take
        if h32 is not None:
            return hs[1:].float() if full else h32
        return hs[1:] if full else hs[L]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        if ctx.bufs is None:
            raise RuntimeError("the fleet recurrence's backward runs once (it reuses its buffers)")
        XH, A, w_ih_p, w_hh_p, perm, *saved = ctx.bufs
        ctx.bufs = None
        L, K, B, Fi, H = ctx.shape
        G = A.shape[2]
        lowp = ctx.lowp
        d_out = d_out.to(A.dtype)
        lstm = ctx.cell == "lstm"
        dW = A.new_zeros(K, Fi + 1 + H, G)  # transposed: XH[t] @ dA[t]' is the faster product here
        dh = A.new_empty(K, H, B)
        dx = A.new_empty(L, K, Fi, B) if ctx.needs_input_grad[0] else None
        if lowp is not None:
            w_hh_p, w_ih_p = w_hh_p.to(lowp), w_ih_p.to(lowp)
            d_low = ctx.take("d_low", (K, G, B), A, lowp)  # the last step's gate gradients, bf16
            dh_low = A.new_empty(K, H, B, dtype=lowp)
            dW_low = A.new_empty(K, Fi + 1 + H, G, dtype=lowp)
            dx_low = A.new_empty(K, Fi, B, dtype=lowp) if dx is not None else None
        w_hh_t, w_ih_t = w_hh_p.transpose(1, 2), w_ih_p.transpose(1, 2)  # (K, H, G), (K, F, G)
        if lstm:
            E, Fk = saved
            dch = A.new_zeros(K, H, B)  # dL/dc / 2 (the stored i, f, g factors are doubled)
        for t in range(L - 1, -1, -1):
            if t == L - 1:
                dh.copy_(d_out[t] if ctx.full else d_out)
            elif lowp is not None:
                torch.bmm(w_hh_t, d_low, out=dh_low)
                torch.add(d_out[t], dh_low, out=dh) if ctx.full else dh.copy_(dh_low)
            elif ctx.full:
                torch.baddbmm(d_out[t], w_hh_t, A[t + 1], out=dh)
            else:
                torch.bmm(w_hh_t, A[t + 1], out=dh)  # A[t + 1] holds step t+1's gate gradients by now
            da = A[t]  # the factors in, the gate gradients out (in place)
            if lstm:
                if t < L - 1:
                    dch.mul_(Fk[t + 1])
                dch.addcmul_(dh, E[t], value=0.5)
                da[:, :H].mul_(dh)  # do
                da[:, H:].view(K, 3, H * B).mul_(dch.view(K, 1, H * B))  # di, df, dg
            else:
                da.mul_(dh)
            if lowp is None:
                dW.baddbmm_(XH[t], da.transpose(1, 2))
                if dx is not None:
                    torch.bmm(w_ih_t, da, out=dx[t])
            else:
                d_low.copy_(da)
                torch.bmm(XH[t], d_low.transpose(1, 2), out=dW_low)
                dW.add_(dW_low)  # the sum over steps in float32
                if dx is not None and dx_low is not None:
                    torch.bmm(w_ih_t, d_low, out=dx_low)
                    dx[t].copy_(dx_low)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm), device=perm.device)
        dWt = dW.transpose(1, 2)[:, inv]  # (K, G, C) in torch's gate order
        d_ih, db, d_hh = dWt[:, :, :Fi], dWt[:, :, Fi], dWt[:, :, Fi + 1 :]
        return dx, d_ih.contiguous(), d_hh.contiguous(), db.contiguous(), db.clone(), None, None, None, None, None



def forward(config: ModelConfig, params: Sequence[torch.Tensor], x: torch.Tensor,
            training: bool = False, workspace: Workspace | None = None,
            lowp: torch.dtype | None = None) -> torch.Tensor:
    """x (K, B, L, F) -> next-step outputs (K, B): member k's model applied to its own batch x[k].

    The same function as ``RecurrentForecaster.forward`` for each k. ``workspace``: the recurrence's
    buffers are reused from one training step to the next (a forward, then its one backward, then
    the next forward) instead of allocated afresh (on the CPU a fresh 100 MB buffer is page-faulted
    in, zeroed by the kernel, on every touch). ``lowp`` (torch.bfloat16): LSTM/RNN training steps
    take bfloat16 operands in the recurrence's products (``ModelSpec.amp`` on the CPU; see
    ``_Recurrence``); inference stays float32.
    """
    K, B, L, _ = x.shape
    H = config.hidden_size
    h = x.new_zeros(K, B, H)
    if config.cell in ("lstm", "rnn"):
        seq = x.permute(2, 0, 3, 1)  # (L, K, F, B): a view, copied once into the recurrence's buffer
        train = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        for layer in range(config.num_layers):
            w_ih, w_hh, b_ih, b_hh = params[4 * layer : 4 * layer + 4]
            last = layer == config.num_layers - 1
            ws = workspace.layer(layer) if workspace is not None and train else None
            out = _Recurrence.apply(seq, w_ih, w_hh, b_ih, b_hh, config.cell, not last, train, ws,
                                    lowp if train else None)
            if last:
                h = out
            else:
                seq = out
                if training and config.dropout > 0:
                    seq = F.dropout(seq, config.dropout, training=True)
        head_w, head_b = params[-2], params[-1]  # (K, 1, H), (K, 1)
        return torch.baddbmm(head_b.unsqueeze(2), head_w, h).squeeze(1)  # (K, 1, H) @ (K, H, B) -> (K, B)
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


def cpu_bf16(device: torch.device, amp: bool, cell: str) -> torch.dtype | None:
    """bfloat16 for the recurrence's products of an LSTM/RNN fleet training on the CPU with ``amp``
    (opt-in, ``ModelSpec.amp``), where the CPU multiplies bfloat16 natively (oneDNN: AVX512-BF16 or AMX;
    emulated it is slower than float32); else None (float32)."""
    if not amp or device.type != "cpu" or cell not in ("lstm", "rnn"):
        return None
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        native = False
    return torch.bfloat16 if native else None


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
    yt, _ = _pad([m.splits.y_train for m in members], device, ())
    xv, mv = _pad([m.splits.x_val for m in members], device, (L, Fin))
    yv, _ = _pad([m.splits.y_val for m in members], device, ())
    m_train = [len(m.splits.y_train) for m in members]
    n_batches = [math.ceil(n / B) for n in m_train]

    states = [m.init if m.init is not None else initial_state(config, c.seed) for m, c in zip(members, cfgs)]
    stacked = stack_states(config, states, device)
    shapes = [p.shape[1:] for p in stacked]
    # Master copies, every parameter of a member in one row (K, P): Adam and clipping are a few ops per step.
    params = torch.cat([p.reshape(K, -1) for p in stacked], dim=1)
    exp_avg = torch.zeros_like(params)
    exp_avg_sq = torch.zeros_like(params)
    steps = torch.zeros(K, dtype=torch.float64, device=device)
    best_params = params.clone()
    workspace = Workspace()
    lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64, device=device)  # Python floats, as Adam's
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
            elem = _LOSSES[loss_name](pred, yt[rows, bi], reduction="none")  # (n_live, B)
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
        out.append(MemberResult(unstack_state(config, _split(best_params, shapes), k), result, None, fleet_size=K,
                                extra={"fleet_duration_s": duration}))
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
        for now, before in zip((params, exp_avg, exp_avg_sq), old):
            now.copy_(torch.where(keep, before, now))
