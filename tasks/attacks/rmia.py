"""Robust membership inference attack, RMIA (Zarifzadeh et al. 2024; method §4.3, design D15).

Inputs are probabilities of the correct outcome (``tasks.attacks.scores`` transform ``rmia_probability``),
view-averaged by the caller, of target and reference models on the audited records x and on
population points z that are non-members of *every* model (e.g. the test split).

* ``P_in(x)`` / ``P_out(x)``: trimmed means (``trim`` cut from each tail, the rule of
  ``scipy.stats.trim_mean``: ``int(trim * count)`` values per tail) over the IN / OUT reference models
  of record x with a finite probability.
* ``p(x)``: online ``(P_in + P_out) / 2``; offline ``((1 + a) P_out + (1 - a)) / 2``.
* ``p(z)``: the same trimmed mean over all reference models (all are OUT for z), in both modes --
  z is a non-member of the target too, so it needs no offline correction.
* ``score(x) = #{z in Z : ratio_x / ratio_z > gamma} / |Z|`` with ``ratio = p(.|target) / p(.)``,
  evaluated as ``ratio_x > gamma * ratio_z``. ``Z`` is one seeded sample of ``n_population`` points
  (without replacement; all points if there are fewer), shared by every record and target.

Epsilons: denominators ``p(x)``, ``p(z)`` are floored at the smallest normal float64 (~2.2e-308) only to
avoid division by zero; no epsilon enters the comparisons (the paper added 1e-10 in three places).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.attacks.auc import roc_auc
from tasks.attacks.base import Attack, AttackInputs, register_attack

_TINY = np.finfo(np.float64).tiny
_BLOCK_ELEMENTS = 4_000_000
# The audits' settings (method §4.3); the offline ``a`` is tuned on reference model ``RMIA_PSEUDO_TARGET``
# (the paper's default ``RMIA_DEFAULT_A`` when that model has no usable members or non-members).
RMIA_PARAMS: dict[str, Any] = {"gamma": 1.0, "n_population": 500, "trim": 0.01, "seed": 0}
RMIA_A_GRID = np.linspace(0.0, 1.0, 21)
RMIA_PSEUDO_TARGET = 0
RMIA_DEFAULT_A = 0.3


def _trimmed_mean(x: np.ndarray, mask: np.ndarray, trim: float) -> np.ndarray:
    """Trimmed mean over axis 0 of x (M, K) restricted to mask (M, K) and finite values -> (K,).

    Matches ``scipy.stats.trim_mean(x[mask[:, k], k], trim)`` for every column k; NaN for columns
    with no usable value.
    """
    m, k = x.shape
    out = np.full(k, np.nan)
    block = max(1, _BLOCK_ELEMENTS // max(1, m))
    rows = np.arange(m)[:, None]
    for a in range(0, k, block):
        xb = x[:, a : a + block]
        w = mask[:, a : a + block] & np.isfinite(xb)
        srt = np.sort(np.where(w, xb, np.nan), axis=0)  # NaN last
        cnt = w.sum(axis=0)
        cut = np.floor(trim * cnt).astype(np.int64)
        keep = (rows >= cut) & (rows < cnt - cut)
        kept = keep.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[a : a + block] = np.where(keep, srt, 0.0).sum(axis=0) / kept
        out[a : a + block][kept == 0] = np.nan
    return out


def _check(name: str, arr: np.ndarray, ndim: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _population_sample(p: int, n_population: int, seed: int) -> np.ndarray:
    if p > n_population:
        return np.sort(np.random.default_rng(seed).choice(p, size=n_population, replace=False))
    return np.arange(p)


def _fractions(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of z with ratio_x > gamma * ratio_z, per x. ratio_x (N,), ratio_z (K,) -> (N,)."""
    thr = np.sort(gamma * ratio_z[np.isfinite(ratio_z)])
    out = np.full(ratio_x.shape, np.nan)
    if thr.size == 0:
        return out
    ok = ~np.isnan(ratio_x)
    out[ok] = np.searchsorted(thr, ratio_x[ok], side="left") / thr.size
    return out


def _score_targets(target_x: np.ndarray, p_x: np.ndarray, target_z: np.ndarray, p_z: np.ndarray, gamma: float) -> np.ndarray:
    """RMIA fractions for every target: target_x (T, N), p_x (N,), target_z (T, K), p_z (K,) -> (T, N)."""
    den_x = np.maximum(p_x, _TINY)  # NaN stays NaN
    den_z = np.maximum(p_z, _TINY)
    out = np.empty(target_x.shape)
    for t in range(target_x.shape[0]):  # targets are few; records and z are vectorised
        out[t] = _fractions(target_x[t] / den_x, target_z[t] / den_z, gamma)
    return out


def _p_x(rx: np.ndarray, rin: np.ndarray, p_out: np.ndarray, online: bool, a: float, trim: float) -> np.ndarray:
    """p(x) (N,): online (P_in + P_out) / 2, offline ((1 + a) P_out + (1 - a)) / 2."""
    if online:
        return 0.5 * (_trimmed_mean(rx, rin, trim) + p_out)
    return 0.5 * ((1.0 + a) * p_out + (1.0 - a))


def rmia_scores(
    target_x: np.ndarray,
    ref_x: np.ndarray,
    ref_in_x: np.ndarray,
    target_z: np.ndarray,
    ref_z: np.ndarray,
    *,
    online: bool = True,
    a: float = 0.3,
    gamma: float = 1.0,
    n_population: int = 500,
    trim: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """RMIA membership scores in [0, 1] (higher = member).

    target_x: (T, N) target models' probabilities on the audited records.
    ref_x: (M, N) reference models on the same records; ref_in_x: (M, N) bool membership.
    target_z: (T, P), ref_z: (M, P) probabilities on population points (non-members of all models).
    Returns (T, N) float64: the fraction of the sampled population points z with
    ``ratio_x / ratio_z > gamma`` (module docstring). NaN where the target's probability is NaN or
    p(x) cannot be estimated (online: no IN or no OUT reference; offline: no OUT reference).
    """
    tx = _check("target_x", target_x, 2)
    rx = _check("ref_x", ref_x, 2)
    tz = _check("target_z", target_z, 2)
    rz = _check("ref_z", ref_z, 2)
    rin = np.asarray(ref_in_x, dtype=bool)
    if rin.shape != rx.shape or tx.shape[1] != rx.shape[1]:
        raise ValueError("ref_x, ref_in_x (M, N) and target_x (T, N) disagree in shape")
    if rz.shape[0] != rx.shape[0] or tz.shape[0] != tx.shape[0] or tz.shape[1] != rz.shape[1]:
        raise ValueError("target_z (T, P) / ref_z (M, P) disagree with target_x / ref_x")
    if not 0.0 <= trim < 0.5:
        raise ValueError("trim must be in [0, 0.5)")
    p_out = _trimmed_mean(rx, ~rin, trim)
    p_x = _p_x(rx, rin, p_out, online, a, trim)
    idx = _population_sample(rz.shape[1], n_population, seed)
    p_z = _trimmed_mean(rz[:, idx], np.ones((rz.shape[0], idx.size), dtype=bool), trim)
    return _score_targets(tx, p_x, tz[:, idx], p_z, gamma)


def tune_rmia_a(
    ref_x: np.ndarray,
    ref_in_x: np.ndarray,
    ref_z: np.ndarray,
    pseudo_target: int,
    grid: np.ndarray | None = None,
    **kw: Any,
) -> float:
    """Choose the offline RMIA parameter ``a`` without looking at any real target (design D15).

    Reference model ``pseudo_target`` plays the target: its membership ``ref_in_x[pseudo_target]`` is
    the truth, the other reference models are the references, and offline RMIA is run for every ``a``
    in ``grid`` (default ``np.linspace(0, 1, 21)``). Returns the ``a`` with the highest ROC AUC
    (the smallest such ``a`` on ties).

    ref_x: (M, N), ref_in_x: (M, N) bool, ref_z: (M, P); ``kw`` is passed on to :func:`rmia_scores`
    (gamma, n_population, trim, seed; not online / a).
    """
    if "online" in kw or "a" in kw:
        raise TypeError("tune_rmia_a always runs offline RMIA over the grid; do not pass online / a")
    grid_arr = np.linspace(0.0, 1.0, 21) if grid is None else np.asarray(grid, dtype=np.float64)
    rx = _check("ref_x", ref_x, 2)
    rz = _check("ref_z", ref_z, 2)
    rin = np.asarray(ref_in_x, dtype=bool)
    m = rx.shape[0]
    if not -m <= pseudo_target < m or m < 2:
        raise ValueError("pseudo_target must index one of at least 2 reference models")
    pt = pseudo_target % m
    others = np.arange(m) != pt
    trim = float(kw.get("trim", 0.01))
    gamma = float(kw.get("gamma", 1.0))
    unknown = set(kw) - {"trim", "gamma", "n_population", "seed"}
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}")
    # Same computation as rmia_scores(..., online=False, a=a), with the reference statistics once.
    p_out = _trimmed_mean(rx[others], ~rin[others], trim)
    idx = _population_sample(rz.shape[1], int(kw.get("n_population", 500)), int(kw.get("seed", 0)))
    p_z = _trimmed_mean(rz[others][:, idx], np.ones((m - 1, idx.size), dtype=bool), trim)
    truth = rin[pt]
    best_a, best_auc = float("nan"), -np.inf
    for a in grid_arr:
        p_x = _p_x(rx, rin, p_out, False, a, trim)
        sc = _score_targets(rx[pt][None, :], p_x, rz[pt][None, idx], p_z, gamma)[0]
        auc = roc_auc(sc, truth)
        if np.isfinite(auc) and auc > best_auc:
            best_a, best_auc = float(a), auc
    if not np.isfinite(best_a):
        raise ValueError("no a in the grid gave a finite AUC (pseudo-target needs members and non-members)")
    return best_a


class _Rmia(Attack):
    """RMIA with the audits' settings; offline ``a`` tuned once, on the first block, never on a target's truth (design D15)."""

    needs = "probs"
    online: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.a: float | None = None
        self.a_source: str | None = None
        self.n_population = 0

    def usable(self, n_references: int, n_population: int) -> bool:
        return n_references >= 2 and n_population > 0

    def score(self, inputs: AttackInputs) -> np.ndarray:
        self.n_population = int(np.shape(inputs.ref_population)[1])
        tuned = {} if self.online else {"a": self._tuned_a(inputs)}
        return rmia_scores(
            inputs.target_probs,
            inputs.ref_probs,
            inputs.ref_in,
            inputs.target_population,
            inputs.ref_population,
            online=self.online,
            **tuned,
            **RMIA_PARAMS,
        )

    def _tuned_a(self, inputs: AttackInputs) -> float:
        if self.a is None:
            try:
                self.a = tune_rmia_a(
                    inputs.ref_probs,
                    inputs.ref_in,
                    inputs.ref_population,
                    pseudo_target=RMIA_PSEUDO_TARGET,
                    grid=RMIA_A_GRID,
                    **RMIA_PARAMS,
                )
            except ValueError:
                self.a, self.a_source = RMIA_DEFAULT_A, "default (tuning failed: no finite AUC on the pseudo-target)"
            else:
                self.a_source = f"tuned on reference model {int(inputs.ref_models[RMIA_PSEUDO_TARGET])} as pseudo-target"
        return self.a

    def params(self, n_reference_models: int) -> dict[str, Any]:
        common = {
            **RMIA_PARAMS,
            "n_reference_models": n_reference_models,
            "population": "test split",
            "n_population_available": self.n_population,
            "probabilities": "view mean",
        }
        if self.online:
            return {"online": True, **common}
        grid = [float(RMIA_A_GRID[0]), float(RMIA_A_GRID[-1]), len(RMIA_A_GRID)]
        return {"online": False, "a": self.a, "a_source": self.a_source, "a_grid": grid, **common}


@register_attack
class RmiaOnline(_Rmia):
    name = "rmia_online"
    audits = ("pool",)
    online = True


@register_attack
class RmiaOffline(_Rmia):
    name = "rmia_offline"
    online = False
