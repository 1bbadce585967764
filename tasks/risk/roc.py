"""ROC analysis of aggregate attacks on target models (method §4.6, design D15).

Conventions: higher score = "member"; ``labels`` are membership booleans; NaN scores are dropped
together with their labels (+-inf scores are kept and rank at the ends). With no member or no
non-member left, AUCs and TPRs are NaN rather than an exception.

TPR at a fixed FPR is the *conservative* value: the largest TPR of a threshold whose FPR does not
exceed the requested one, read off the empirical ROC step points. No interpolation between points
(the paper's helper interpolated sklearn's ROC, which credits an attacker with operating points no
threshold achieves, and is optimistic at FPRs below 1 / #non-members).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tasks.attacks.auc import finite_scores, roc_auc


def _nan_stat(fn: Callable[..., Any], a: np.ndarray, axis: int | None = None) -> Any:
    """fn (np.nanmean / np.nanstd) without the all-NaN-slice warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(a, axis=axis)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ROC curve: one point per distinct threshold.

    scores (n,), labels (n,) -> (fpr (K,), tpr (K,)) with fpr ascending, starting at (0, 0) and ending
    at (1, 1). Ties between scores give one (diagonal) step. Degenerate input (a class empty):
    ``fpr = [0, 1]``, ``tpr = [nan, nan]``.
    """
    s, y = finite_scores(scores, labels)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return np.array([0.0, 1.0]), np.array([np.nan, np.nan])
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    ys = y[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])  # last index of each tie group
    tps = np.cumsum(ys)[ends]
    fps = ends + 1 - tps
    fpr = np.r_[0.0, fps / n0]
    tpr = np.r_[0.0, tps / n1]
    return fpr, tpr


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, fprs: np.ndarray) -> np.ndarray:
    """Largest tpr among curve points with fpr <= f (1e-12 relative slack for rounding)."""
    idx = np.searchsorted(fpr, fprs * (1.0 + 1e-12), side="right") - 1
    out = tpr[np.clip(idx, 0, None)]
    return np.where(idx >= 0, out, np.nan)


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fprs: Sequence[float]) -> np.ndarray:
    """Conservative TPR at each requested FPR.

    scores (n,), labels (n,), fprs (F,) -> (F,) float64: for each f the largest TPR over the ROC step
    points with FPR <= f (what a threshold chosen with knowledge of the non-member scores can
    guarantee). Between points the value stays at the lower step; below 1 / #non-members it is the TPR
    at FPR = 0 (possibly 0). NaN for degenerate input.
    """
    fpr, tpr = roc_curve(scores, labels)
    return _tpr_at(fpr, tpr, np.asarray(fprs, dtype=np.float64))


def log_fpr_grid(n: int = 1000, lo: float = 1e-5) -> np.ndarray:
    """``n`` FPR values log-spaced from ``lo`` to 1 (inclusive) -> (n,) float64."""
    return np.logspace(np.log10(lo), 0.0, n)


def summarize_attack(
    scores: np.ndarray,
    membership: np.ndarray,
    fprs: Sequence[float],
    grid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-target ROC summary of an attack.

    scores: (T, N) attack scores of T target models (or (N,) for one target); membership: same shape
    bool. Returns::

        {'auc_mean', 'auc_std',            # over targets (std ddof 0, NaN targets ignored)
         'auc_per_target': [T floats],
         'tpr_mean': {fpr: v}, 'tpr_std': {fpr: v},      # conservative TPR at each requested FPR
         'grid': (G,),                                   # default log_fpr_grid()
         'tpr_curve_mean': (G,), 'tpr_curve_std': (G,)}  # step TPR on the grid, averaged vertically
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.atleast_2d(np.asarray(membership, dtype=bool))
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and membership {y.shape} differ")
    g = log_fpr_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    f = np.asarray(list(fprs), dtype=np.float64)
    aucs = np.array([roc_auc(s[t], y[t]) for t in range(s.shape[0])])
    tprs = np.empty((s.shape[0], f.size))
    curves = np.empty((s.shape[0], g.size))
    for t in range(s.shape[0]):
        fpr, tpr = roc_curve(s[t], y[t])
        tprs[t] = _tpr_at(fpr, tpr, f)
        curves[t] = _tpr_at(fpr, tpr, g)

    tm = _nan_stat(np.nanmean, tprs, 0)
    ts = _nan_stat(np.nanstd, tprs, 0)
    return {
        "auc_mean": float(_nan_stat(np.nanmean, aucs)),
        "auc_std": float(_nan_stat(np.nanstd, aucs)),
        "auc_per_target": [float(v) for v in aucs],
        "tpr_mean": {float(k): float(v) for k, v in zip(f, tm, strict=True)},
        "tpr_std": {float(k): float(v) for k, v in zip(f, ts, strict=True)},
        "grid": g,
        "tpr_curve_mean": _nan_stat(np.nanmean, curves, 0),
        "tpr_curve_std": _nan_stat(np.nanstd, curves, 0),
    }
