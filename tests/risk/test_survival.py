"""Empirical survival curves of risk."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ecdf

from tasks.risk.survival import survival_curve


@pytest.mark.filterwarnings("ignore:The confidence interval is undefined")
def test_survival_curve_hand_and_scipy():
    out = survival_curve(np.array([0.9, 0.6, np.nan, 0.7, 0.6]))
    assert list(out.columns) == ["x", "sf", "lo", "hi"]
    np.testing.assert_allclose(out["x"], [0.6, 0.7, 0.9])
    np.testing.assert_allclose(out["sf"], [0.5, 0.25, 0.0])
    body = out.iloc[:-1]  # at sf = 0 Greenwood's interval is undefined (NaN), as in scipy
    assert (body["lo"] <= body["sf"]).all() and (body["sf"] <= body["hi"]).all()
    assert np.isnan(out["lo"].iloc[-1])
    x = np.random.default_rng(0).uniform(0.5, 1, 300)
    out = survival_curve(x, confidence=0.9)
    ci = ecdf(x).sf.confidence_interval(0.9)
    np.testing.assert_allclose(out["lo"], ci.low.probabilities)
    np.testing.assert_allclose(out["hi"], ci.high.probabilities)
    # pointwise CI width ~ Greenwood / binomial
    i = 150
    half = (out["hi"][i] - out["lo"][i]) / 2
    p = out["sf"][i]
    assert half == pytest.approx(1.645 * np.sqrt(p * (1 - p) / 300), rel=0.02)


def test_survival_curve_empty_and_single():
    assert survival_curve(np.array([np.nan])).empty
    one = survival_curve(np.array([0.8]))
    assert one["x"].tolist() == [0.8] and one["sf"].tolist() == [0.0]
