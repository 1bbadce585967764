"""Multiple testing: Benjamini-Hochberg q-values, shared by the pool audit's swap null and the model audit."""

from __future__ import annotations

import numpy as np


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (n,) of p-values (n,): min over k >= rank of p_(k) n / k, capped at 1.

    A hypothesis is rejected at FDR level a exactly when its q-value is <= a. NaNs stay NaN and do not
    count towards n."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    n = len(order)
    scaled = p[order] * n / np.arange(1, n + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q
