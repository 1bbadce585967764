"""The Mann-Whitney ROC AUC of scores against membership labels: what the attacks are tuned on and scored by."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def finite_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in shape: {s.shape} vs {y.shape}")
    keep = ~np.isnan(s)
    return s[keep], y[keep]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC AUC: P(score_member > score_nonmember) + P(equal) / 2.

    scores (n,) float, labels (n,) bool -> float; NaN scores dropped; NaN if a class is empty.
    Equals ``sklearn.metrics.roc_auc_score``.
    """
    s, y = finite_scores(scores, labels)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s, method="average")
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))
