"""The recurrence of K stacked recurrent models of one shape, advanced together in one batched pass.

``nn.LSTM`` has no batched-weights (vmap) rule, so the cell maths is written out here, gate for gate
as torch documents it; weights are stacked along a leading member axis and a step is one ``torch.bmm``:

    lstm  i, f, g, o = x W_ih' + b_ih + h W_hh' + b_hh;  c = σf·c + σi·tanh g;  h = σo·tanh c
    gru   r, z = σ(x W_i{r,z}' + b + h W_h{r,z}' + b);  n = tanh(x W_in' + b_in + r·(h W_hn' + b_hn));
          h = (1 - z)·n + z·h
    rnn   h = tanh(x W_ih' + b_ih + h W_hh' + b_hh)

LSTM and RNN run ``_Recurrence`` (a hand-written backward: the CPU path's cost is per-op overhead and
memory traffic); GRU runs autograd over the step loop. Measurements: bench/results/fleet.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from forecaster.modelling.network import ModelConfig


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
    return {name: p[k].detach().to("cpu").clone().contiguous() for name, p in zip(_names(config), params, strict=True)}


_PERM: dict[tuple[str, int, torch.device], torch.Tensor] = {}


def _gate_perm(cell: str, H: int, device: torch.device) -> torch.Tensor:
    """Row order of the recurrence's internal gate layout: LSTM (o, i, f, g) from torch's (i, f, g, o),
    so the three sigmoid gates are one block and the input-side gates (i, f, g) a contiguous tail."""
    key = (cell, H, device)
    if key not in _PERM:
        blocks = (3, 0, 1, 2) if cell == "lstm" else (0,)
        _PERM[key] = torch.cat([torch.arange(b * H, (b + 1) * H) for b in blocks]).to(device)
    return _PERM[key]


class LayerBuffers:
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


class RecurrenceBuffers:
    """The recurrence buffers of a training loop (one ``LayerBuffers`` per layer); one forward and its
    backward at a time."""

    def __init__(self) -> None:
        self.layers: dict[int, LayerBuffers] = {}

    def layer(self, i: int) -> LayerBuffers:
        return self.layers.setdefault(i, LayerBuffers())


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
      with ``ws`` (``LayerBuffers``) the buffers are reused from one training step to the next.
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
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.bfloat16)  # type: ignore[untyped-decorator]  # torch's own; under CUDA autocast: all bf16
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                b_hh: torch.Tensor, cell: str, full: bool, train: bool, ws: LayerBuffers | None,
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
    @torch.amp.custom_bwd(device_type="cuda")  # type: ignore[untyped-decorator]  # torch's own
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
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
            training: bool = False, workspace: RecurrenceBuffers | None = None,
            lowp: torch.dtype | None = None) -> torch.Tensor:
    """x (K, B, L, F) -> next-step outputs (K, B), or paths (K, B, h): member k's model on its own batch x[k].

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
            out: torch.Tensor = _Recurrence.apply(  # type: ignore[no-untyped-call]  # torch's own
                seq, w_ih, w_hh, b_ih, b_hh, config.cell, not last, train, ws, lowp if train else None)
            if last:
                h = out
            else:
                seq = out
                if training and config.dropout > 0:
                    seq = F.dropout(seq, config.dropout, training=True)
        head_w, head_b = params[-2], params[-1]  # (K, h, H), (K, h)
        out = torch.baddbmm(head_b.unsqueeze(2), head_w, h)  # (K, h, H) @ (K, H, B) -> (K, h, B)
        return out.squeeze(1) if config.horizon == 1 else out.transpose(1, 2)  # (K, B) or (K, B, h)
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
    head_w, head_b = params[-2], params[-1]  # (K, h, H), (K, h)
    out = torch.baddbmm(head_b.unsqueeze(1), h, head_w.transpose(1, 2))  # (K, B, h)
    return out.squeeze(-1) if config.horizon == 1 else out  # (K, B) or (K, B, h)
