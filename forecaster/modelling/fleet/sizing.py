"""How big a fleet may be and where one pays: a byte budget per fleet, and the CPU cases that are faster.

A fleet is no faster than the per-series loop in float32 on the CPU, faster with bf16 products from
``CPU_MIN_MEMBERS`` members, and always on a GPU; measurements: bench/results/fleet.md.
"""

from __future__ import annotations

import torch

from forecaster.modelling.network import ModelConfig, RecurrentForecaster
from forecaster.modelling.training import pick_device

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CPU_BUDGET_BYTES = 2 * 1024**3  # per fleet on the CPU (data + activations)
CPU_MAX_MEMBERS = 64  # larger CPU groups train as consecutive fleets: beyond it a member's buffers leave the caches
FLEET_ON_CPU = False  # float32 fleets on the CPU (amp fleets of CPU_MIN_MEMBERS or more: see fleet_pays)
CPU_MIN_MEMBERS = 16  # below this a bf16 CPU fleet is not reliably faster than the per-series loop
CUDA_SHARE = 0.6  # of the device's free memory per fleet


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


def member_bytes(config: ModelConfig, window: int, n_features: int, n_windows: int, batch_size: int) -> int:
    """Rough bytes one member needs in a fleet: its data on the device plus a step's activations."""
    gates = _GATES[config.cell] * config.hidden_size
    data = n_windows * (window * n_features + config.horizon) * 4
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
