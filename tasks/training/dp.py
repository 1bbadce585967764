"""DP-SGD at record or patient level (design D17), with Opacus' per-sample gradients and RDP accountant.

One loop serves both guarantees: a *unit* is a record (record-level DP, as in the paper) or a patient
(patient-level DP: all of a patient's records are sampled, summed and clipped together, which is
the guarantee a patient actually needs). Units are Poisson-sampled with rate q; each step clips
every unit's summed gradient to norm C, adds N(0, σ²C²) and divides by the expected batch q·n.
σ is calibrated by Opacus for the target (ε, δ) over T steps; the spent ε is accounted by Opacus'
RDP accountant from (σ, q, T).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch import nn

from tasks.risk.dp_bounds import auc_bound_from_epsilon_delta, auc_bound_gdp


@dataclass
class DPAccount:
    """What a DP-trained model spent, recorded with the model (design D17)."""

    unit: str
    target_epsilon: float
    epsilon: float
    delta: float
    noise_multiplier: float
    sampling_rate: float
    steps: int
    clip_norm: float
    n_units: int
    auc_bound: float  # theoretical bound on any membership attack's AUC (method §4.9)

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def dp_schedule(n_units: int, batch_units: int, epochs: int) -> tuple[float, int]:
    """(sampling rate q, number of steps T) for Poisson sampling of ``batch_units`` expected units."""
    q = min(batch_units / n_units, 1.0)
    return q, max(round(epochs / q), 1)


def calibrate(epsilon: float, delta: float, q: float, steps: int) -> float:
    """Noise multiplier σ reaching (ε, δ) after ``steps`` Poisson-sampled steps at rate q (Opacus RDP)."""
    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp"))


def account(noise_multiplier: float, q: float, steps: int, delta: float) -> float:
    """ε spent by ``steps`` steps of the subsampled Gaussian mechanism (Opacus' RDP accountant)."""
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, q, steps)]
    return float(acc.get_epsilon(delta))


def device_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (on the CPU: the generator train_dp always used)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def clip_per_unit(
    gsm: GradSampleModule,
    loss_fn_per_sample: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    local: torch.Tensor,
    n_chosen: int,
    clip_norm: float,
) -> list[torch.Tensor]:
    """The summed clipped gradient of one DP-SGD step, one tensor per trainable parameter (on its device).

    ``xb`` (B, *shape) and ``yb`` are the chosen units' rows, ``local`` (B,) int64 each row's unit among the
    ``n_chosen`` chosen ones. Every unit's gradient is the sum of its rows' per-sample gradients; it is
    scaled to norm at most ``clip_norm`` (factor min(1, C / (norm + 1e-6))), then the units are summed.
    """
    params = [p for p in gsm.parameters() if p.requires_grad]
    gsm.zero_grad(set_to_none=True)
    loss_fn_per_sample(gsm(xb).float(), yb).sum().backward()
    per_unit = []
    for p in params:
        g = torch.zeros((n_chosen, *p.shape), dtype=p.grad_sample.dtype, device=p.grad_sample.device)
        g.index_add_(0, local, p.grad_sample)
        per_unit.append(g)
        p.grad_sample = None
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_unit))
    factor = (clip_norm / (norms + 1e-6)).clamp(max=1.0)
    return [torch.einsum("u,u...->...", factor, g) for g in per_unit]


def train_dp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn_per_sample: nn.Module,
    units: np.ndarray,
    *,
    epsilon: float,
    delta: float | None,
    clip_norm: float,
    batch_units: int,
    epochs: int,
    lr_at: callable,
    momentum: float,
    seed: int,
    unit_name: str,
) -> DPAccount:
    """Train ``model`` in place with DP-SGD over ``units`` (N,) int codes of the N training rows.

    x (N, *shape), y (N, ...) targets as the loss expects; ``loss_fn_per_sample`` has reduction='none';
    ``lr_at(step, total)`` gives the learning rate. Returns the privacy account.
    """
    codes, unit_of_row = np.unique(units, return_inverse=True)
    n_units = len(codes)
    delta = delta if delta is not None else 1.0 / n_units
    q, steps = dp_schedule(n_units, batch_units, epochs)
    sigma = calibrate(epsilon, delta, q, steps)
    device = next(p for p in model.parameters()).device
    # every row's unit, and the rows grouped by unit (a stable sort keeps each unit's rows in order)
    order = np.argsort(unit_of_row, kind="stable")
    unit_sorted = unit_of_row[order]
    x, y = x.to(device), y.to(device)  # once: each step gathers its rows on the model's device
    gsm = GradSampleModule(model, loss_reduction="sum")
    params = [p for p in gsm.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr_at(0, steps), momentum=momentum)
    # The Poisson draws stay on the host (n_units coins a step, and the chosen rows are needed there to size
    # the batch anyway); the noise is drawn on the model's device from a generator seeded on that device.
    rng = np.random.default_rng(seed)
    gen = device_generator(device, seed)
    gsm.train()
    for step in range(steps):
        chosen = rng.random(n_units) < q
        grads = [torch.zeros_like(p) for p in params]
        if chosen.any():
            in_batch = chosen[unit_sorted]
            rows = order[in_batch]  # the chosen units' rows, unit after unit
            # each row's position among the chosen units (0 .. n_chosen - 1)
            local = (np.cumsum(chosen) - 1)[unit_sorted[in_batch]]
            rows_t = torch.from_numpy(rows).to(device, non_blocking=True)
            local_t = torch.from_numpy(local).to(device, non_blocking=True)
            grads = clip_per_unit(
                gsm, loss_fn_per_sample, x.index_select(0, rows_t), y.index_select(0, rows_t), local_t, int(chosen.sum()), clip_norm
            )
        for p, g in zip(params, grads, strict=True):
            noise = torch.normal(0.0, sigma * clip_norm, size=p.shape, generator=gen, device=device, dtype=g.dtype)
            p.grad = (g + noise) / (q * n_units)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        opt.step()
    gsm.zero_grad(set_to_none=True)
    gsm._close()
    spent = account(sigma, q, steps, delta)
    bound = auc_bound_gdp(sigma, q, steps) if spent > 10 else auc_bound_from_epsilon_delta(spent, delta)
    if not math.isfinite(spent):
        raise FloatingPointError("DP accounting returned a non-finite epsilon")
    return DPAccount(unit_name, epsilon, spent, delta, sigma, q, steps, clip_norm, n_units, float(bound))
