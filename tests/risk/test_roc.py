"""ROC helpers: AUC vs sklearn, curve shape, conservative TPR at FPR, attack summaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from tasks.attacks.auc import roc_auc
from tasks.risk.roc import log_fpr_grid, roc_curve, summarize_attack, tpr_at_fpr


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 200), ties=st.booleans())
def test_auc_and_curve_match_sklearn(seed, n, ties):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    y[0], y[1] = True, False
    s = rng.normal(size=n) + y
    if ties:
        s = np.round(s)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr = roc_curve(s, y)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_nan_scores_dropped_and_degenerate_input():
    s = np.array([0.9, np.nan, 0.2, 0.4])
    y = np.array([True, True, False, False])
    assert roc_auc(s, y) == 1.0
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))
    assert np.isnan(tpr_at_fpr(np.array([0.1, 0.2]), np.array([False, False]), [0.1])).all()


def test_tpr_at_fpr_hand_example():
    # members at 0.9, 0.7, 0.6; non-members at 0.8, 0.5, 0.4
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    fpr, tpr = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    got = tpr_at_fpr(s, y, [0.0, 0.2, 1 / 3, 0.5, 1.0])
    np.testing.assert_allclose(got, [1 / 3, 1 / 3, 1.0, 1.0, 1.0])


def test_tpr_at_fpr_is_conservative_with_ties():
    # a member and a non-member tie at the top: no threshold gives TPR 0.5 at FPR < 0.5
    s = np.array([0.9, 0.9, 0.1, 0.1])
    y = np.array([True, False, True, False])
    np.testing.assert_allclose(tpr_at_fpr(s, y, [0.0, 0.4, 0.5]), [0.0, 0.0, 0.5])


def test_log_grid():
    g = log_fpr_grid(5, 1e-4)
    np.testing.assert_allclose(g, [1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_summarize_attack():
    rng = np.random.default_rng(0)
    y = rng.random((3, 2000)) < 0.5
    s = rng.normal(size=(3, 2000)) + 1.5 * y
    s[0, :5] = np.nan
    out = summarize_attack(s, y, fprs=[1e-3, 0.1], grid=np.array([0.01, 0.1, 1.0]))
    per = [roc_auc(s[i], y[i]) for i in range(3)]
    assert out["auc_per_target"] == pytest.approx(per)
    assert out["auc_mean"] == pytest.approx(np.mean(per)) and out["auc_std"] == pytest.approx(np.std(per))
    assert set(out["tpr_mean"]) == {1e-3, 0.1}
    tprs = [tpr_at_fpr(s[i], y[i], [0.1])[0] for i in range(3)]
    assert out["tpr_mean"][0.1] == pytest.approx(np.mean(tprs))
    assert out["tpr_std"][0.1] == pytest.approx(np.std(tprs))
    assert out["tpr_curve_mean"].shape == (3,) and out["tpr_curve_mean"][-1] == 1.0
    assert out["tpr_curve_mean"][1] == pytest.approx(out["tpr_mean"][0.1])
    default = summarize_attack(s, y, fprs=[0.01])
    assert default["grid"].shape == (1000,) and default["grid"][0] == pytest.approx(1e-5)
