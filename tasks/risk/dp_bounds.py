"""Upper bounds on membership-inference AUC implied by differential privacy (method §4.9, design D17).

Any membership test against an (eps, delta)-DP or mu-GDP mechanism has a ROC curve above-bounded by
the mechanism's trade-off curve (Dong, Roth & Su 2019); integrating ``1 - beta(alpha)`` gives an AUC
bound that is drawn next to the empirical per-record / per-patient AUCs.

* mu-GDP: ``beta(alpha) = Phi(Phi^-1(1 - alpha) - mu)``, a binormal ROC with unit variances and
  separation mu, so AUC = Phi(mu / sqrt 2).
* (eps, delta)-DP: ``beta(alpha) = max(0, 1 - delta - e^eps alpha, e^-eps (1 - delta - alpha))``; the
  integral has the closed form AUC = 1 - (1 - delta)^2 / (1 + e^eps) (computed stably).

The full privacy-profile (PLD) bound of the paper for eps <= 10 is not implemented here.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.special import expit, ndtr, ndtri

from tasks.attacks.record_auc import record_statistics


def gdp_mu(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    *,
    sampling: Literal["poisson", "uniform"] = "poisson",
) -> float:
    """CLT mu of DP-SGD (Bu, Dong, Long & Su 2020) after ``steps`` steps at sampling rate q.

    * ``'poisson'`` (Opacus' default sampling, used by medaudit's DP pools):
      ``mu = q sqrt(T (e^{1/sigma^2} - 1))``.
    * ``'uniform'`` (fixed-size batches without replacement):
      ``mu = sqrt(2) q sqrt(T) sqrt(e^{1/sigma^2} Phi(1.5/sigma) + 3 Phi(-0.5/sigma) - 2)``.
      This is the formula the paper's code used (method §4.9 calls it Poisson; in
      tensorflow-privacy / Opacus ``gdp`` it is ``compute_mu_uniform``).

    Returns inf when sigma is 0 (no noise) or e^{1/sigma^2} overflows, 0 when q or T is 0.
    """
    q = float(sampling_rate)
    t = float(steps)
    sigma = float(noise_multiplier)
    if q <= 0.0 or t <= 0.0:
        return 0.0
    if sigma <= 0.0:
        return math.inf
    inv2 = sigma**-2
    if inv2 > 700.0:
        return math.inf
    if sampling == "poisson":
        return q * math.sqrt(t * math.expm1(inv2))
    if sampling == "uniform":
        inner = math.exp(inv2) * ndtr(1.5 / sigma) + 3.0 * ndtr(-0.5 / sigma) - 2.0
        return math.sqrt(2.0) * q * math.sqrt(t) * math.sqrt(max(inner, 0.0))
    raise ValueError(f"sampling must be 'poisson' or 'uniform', got {sampling!r}")


def auc_bound_gdp(
    noise_multiplier: float | None,
    sampling_rate: float,
    steps: int,
    *,
    sampling: Literal["poisson", "uniform"] = "poisson",
) -> float:
    """AUC upper bound Phi(mu / sqrt 2) for DP-SGD under the mu-GDP CLT approximation.

    mu from :func:`gdp_mu` (Poisson subsampling by default; ``sampling='uniform'`` reproduces the
    paper's formula). A non-private run (``noise_multiplier`` None or 0) gives 1.0. The CLT is an
    approximation that is accurate for many steps and small q; it is not a certified bound.
    """
    if noise_multiplier is None or noise_multiplier <= 0:
        return 1.0
    mu = gdp_mu(noise_multiplier, sampling_rate, steps, sampling=sampling)
    return float(ndtr(mu / math.sqrt(2.0)))


def auc_bound_from_epsilon_delta(eps: float, delta: float) -> float:
    """AUC of the (eps, delta)-DP trade-off curve: an upper bound on any membership test's AUC.

    ``AUC = integral_0^1 (1 - beta(alpha)) d alpha`` with
    ``beta(alpha) = max(0, 1 - delta - e^eps alpha, e^-eps (1 - delta - alpha))``. The two lines meet
    at alpha* = (1 - delta) / (1 + e^eps) and the integral is exactly ``1 - (1 - delta)^2 / (1 + e^eps)``
    (checked against numerical integration in the tests); eps = inf or delta >= 1 gives 1.0,
    eps = delta = 0 gives 0.5.
    """
    if eps < 0 or not 0.0 <= delta <= 1.0:
        raise ValueError("need eps >= 0 and 0 <= delta <= 1")
    if math.isinf(eps):
        return 1.0
    return float(1.0 - (1.0 - delta) ** 2 * expit(-eps))


def max_auc_noise_limit(
    bound: float, n_in: np.ndarray, n_out: np.ndarray, *, min_per_side: int = 2, level: float = 0.95, seed: int = 0
) -> float:
    """The ``level`` quantile of the largest *estimated* record AUC when every record's true AUC is ``bound``.

    The bound holds for every record's true AUC; an audit only estimates record AUCs, and the maximum over
    many noisy estimates is biased upwards, so an observed maximum is above the bound only beyond this limit.

    Records r = 0..R-1 have n_in[r] IN and n_out[r] OUT models; scores are binormal with unit
    variances and separation sqrt(2)·Phi^-1(bound) (AUC = bound) and go through the audit's own
    estimator (tasks/attacks/record_auc.py). Simulations: as many as fit 2e7 score draws, 20 to 200.
    Returns 1.0 for a bound of 1 (nothing can exceed it) and NaN without records.
    """
    n_in = np.asarray(n_in, dtype=np.int64)
    n_out = np.asarray(n_out, dtype=np.int64)
    if not np.isfinite(bound) or bound >= 1.0:
        return 1.0
    if len(n_in) == 0:
        return float("nan")
    sep = math.sqrt(2.0) * float(ndtri(max(bound, 0.5)))
    m = int((n_in + n_out).max())
    col = np.arange(m)[:, None]
    in_mask = col < n_in[None, :]
    valid = col < (n_in + n_out)[None, :]
    n_sims = int(np.clip(2e7 // (m * len(n_in)), 20, 200))
    rng = np.random.default_rng(seed)
    maxima = np.empty(n_sims)
    for i in range(n_sims):
        scores = rng.standard_normal(in_mask.shape) + sep * in_mask
        scores[~valid] = np.nan
        auc = record_statistics(scores, in_mask, min_per_side)["auc"].to_numpy()
        maxima[i] = np.nanmax(auc) if np.isfinite(auc).any() else np.nan
    return float(np.nanquantile(maxima, level))
