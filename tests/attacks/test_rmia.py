"""RMIA: a hand-computed case, trimmed means, population sampling, tuning of a on a reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from tasks.attacks.auc import roc_auc
from tasks.attacks.rmia import _trimmed_mean, rmia_scores, tune_rmia_a

# 2 reference models, 2 records, 3 population points
REF_X = np.array([[0.8, 0.2], [0.4, 0.6]])
REF_IN = np.array([[True, False], [False, True]])
REF_Z = np.array([[0.5, 0.2, 0.9], [0.3, 0.4, 0.7]])
TGT_X = np.array([[0.9, 0.3]])
TGT_Z = np.array([[0.4, 0.6, 0.8]])


def test_hand_computed_online():
    # p(x0) = (0.8 + 0.4)/2 = 0.6, p(x1) = (0.6 + 0.2)/2 = 0.4 -> ratio_x = [1.5, 0.75]
    # p(z) = [0.4, 0.3, 0.8] -> ratio_z = [1.0, 2.0, 1.0]
    out = rmia_scores(TGT_X, REF_X, REF_IN, TGT_Z, REF_Z, online=True, gamma=1.0)
    np.testing.assert_array_equal(out, [[2 / 3, 0.0]])
    out = rmia_scores(TGT_X, REF_X, REF_IN, TGT_Z, REF_Z, online=True, gamma=0.5)
    np.testing.assert_array_equal(out, [[1.0, 2 / 3]])
    # ties count as "not greater": target 0.4 on record 1 gives ratio_x = 1.0 = ratio_z of z0, z2
    out = rmia_scores(np.array([[0.9, 0.4]]), REF_X, REF_IN, TGT_Z, REF_Z, online=True, gamma=1.0)
    np.testing.assert_array_equal(out, [[2 / 3, 0.0]])


def test_hand_computed_offline():
    # a = 0.5: p(x0) = (1.5*0.4 + 0.5)/2 = 0.55, p(x1) = (1.5*0.2 + 0.5)/2 = 0.4
    # ratio_x = [1.636.., 0.75]; ratio_z = [1, 2, 1]
    out = rmia_scores(TGT_X, REF_X, REF_IN, TGT_Z, REF_Z, online=False, a=0.5)
    np.testing.assert_array_equal(out, [[2 / 3, 0.0]])
    # a = 0 with target probability 1 on record 1: p(x1) = (0.2 + 1)/2 = 0.6 -> ratio 1/0.6 > 1 for two z
    out = rmia_scores(np.array([[0.9, 1.0]]), REF_X, REF_IN, TGT_Z, REF_Z, online=False, a=0.0)
    np.testing.assert_array_equal(out[0, 1], 2 / 3)


def test_population_subsample_and_nan():
    out = rmia_scores(TGT_X, REF_X, REF_IN, TGT_Z, REF_Z, n_population=2, seed=7)
    idx = np.sort(np.random.default_rng(7).choice(3, size=2, replace=False))
    ratio_z = TGT_Z[0, idx] / REF_Z[:, idx].mean(axis=0)
    expected = [(ratio_z < 1.5).mean(), (ratio_z < 0.75).mean()]
    np.testing.assert_allclose(out[0], expected)
    tx = TGT_X.copy()
    tx[0, 1] = np.nan
    out = rmia_scores(tx, REF_X, REF_IN, TGT_Z, REF_Z)
    assert out[0, 0] == pytest.approx(2 / 3) and np.isnan(out[0, 1])


def test_trimmed_mean_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.random((150, 40))
    mask = rng.random((150, 40)) < 0.6
    x[rng.random(x.shape) < 0.05] = np.nan
    for trim in (0.0, 0.01, 0.1, 0.25):
        got = _trimmed_mean(x, mask, trim)
        for k in range(40):
            v = x[mask[:, k] & np.isfinite(x[:, k]), k]
            assert got[k] == pytest.approx(trim_mean(v, trim), rel=1e-12)


def _prob_pool(seed: int, m: int, n: int, p: int):
    """Members get a higher probability of the correct class; easy records are easy for everyone."""
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < 0.5
    base = rng.normal(0, 1.5, n)
    logit_x = base[None, :] + 1.0 * mask + rng.normal(0, 0.7, (m, n))
    logit_z = rng.normal(0, 1.5, p)[None, :] + rng.normal(0, 0.7, (m, p))
    return 1 / (1 + np.exp(-logit_x)), mask, 1 / (1 + np.exp(-logit_z))


def test_rmia_detects_members_and_tuning_uses_only_references():
    x, mask, z = _prob_pool(1, 41, 1500, 600)
    tgt_x, tgt_in, tgt_z = x[:1], mask[:1], z[:1]
    ref_x, ref_in, ref_z = x[1:], mask[1:], z[1:]
    on = rmia_scores(tgt_x, ref_x, ref_in, tgt_z, ref_z, online=True)
    assert roc_auc(on[0], tgt_in[0]) > 0.7
    grid = np.linspace(0, 1, 11)
    a = tune_rmia_a(ref_x, ref_in, ref_z, pseudo_target=0, grid=grid, n_population=200, seed=3)
    assert a in grid
    # brute force with the public function: same choice
    others = np.arange(ref_x.shape[0]) != 0
    aucs = [
        roc_auc(
            rmia_scores(
                ref_x[[0]],
                ref_x[others],
                ref_in[others],
                ref_z[[0]],
                ref_z[others],
                online=False,
                a=g,
                n_population=200,
                seed=3,
            )[0],
            ref_in[0],
        )
        for g in grid
    ]
    assert a == grid[int(np.argmax(aucs))]
    # the pseudo-target is found by index, wherever it sits in the pool
    perm = np.r_[np.arange(1, ref_x.shape[0]), 0]
    moved = ref_x.shape[0] - 1
    assert tune_rmia_a(ref_x[perm], ref_in[perm], ref_z[perm], moved, grid=grid, n_population=200, seed=3) == a
    off = rmia_scores(tgt_x, ref_x, ref_in, tgt_z, ref_z, online=False, a=a)
    assert roc_auc(off[0], tgt_in[0]) > 0.6


def test_tune_rejects_bad_arguments():
    with pytest.raises(TypeError):
        tune_rmia_a(REF_X, REF_IN, REF_Z, 0, online=True)
    with pytest.raises(ValueError):
        tune_rmia_a(REF_X[:1], REF_IN[:1], REF_Z[:1], 0)
