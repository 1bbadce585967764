"""Empirical survival function of risk values (method §4.5, design D21)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import ecdf


def survival_curve(values: np.ndarray, confidence: float = 0.95) -> pd.DataFrame:
    """Empirical survival function P(risk > x) with a pointwise confidence interval.

    values: (n,) risk values (NaN dropped). Returns a DataFrame with one row per distinct value
    (the step points, ascending): ``x``, ``sf`` (survival just after x), ``lo``, ``hi`` (pointwise CI
    from ``scipy.stats.ecdf(values).sf.confidence_interval(confidence)``, scipy's default Greenwood
    'linear' method, as the paper; NaN where that interval is undefined, i.e. at the last step where
    sf = 0). Empty input gives an empty frame with these columns.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return pd.DataFrame({c: np.empty(0) for c in ("x", "sf", "lo", "hi")})
    res = ecdf(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a single value has an undefined variance
        ci = res.sf.confidence_interval(confidence)
    return pd.DataFrame(
        {
            "x": np.asarray(res.sf.quantiles, dtype=np.float64),
            "sf": np.asarray(res.sf.probabilities, dtype=np.float64),
            "lo": np.asarray(ci.low.probabilities, dtype=np.float64),
            "hi": np.asarray(ci.high.probabilities, dtype=np.float64),
        }
    )
