"""Per-record AUC statistics: analytic values, calibration of the SE, properties, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

import tasks.attacks.record_auc as ra
from tasks.attacks.record_auc import (
    binormal_auc,
    hanley_mcneil_se,
    record_statistics,
    se_vs_model_count,
)


def _balanced_mask(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """Complementary pairs as in design D6: every record IN for exactly m/2 models."""
    half = rng.random((m // 2, n)) < 0.5
    mask = np.empty((m, n), dtype=bool)
    mask[0::2] = half
    mask[1::2] = ~half
    return mask


def _simulate(seed: int, m: int, n: int, d: np.ndarray | float, v: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = _balanced_mask(rng, m, n)
    d = np.broadcast_to(np.asarray(d, dtype=float), (n,))
    scores = rng.standard_normal((m, n, v)) + (mask * d[None, :])[:, :, None]
    return scores, mask


def test_analytic_auc_matches_theory_and_empirical():
    d = np.repeat(np.array([0.0, 0.5, 1.0, 2.0]), 500)
    scores, mask = _simulate(0, 200, d.size, d)
    df = record_statistics(scores, mask)
    truth = norm.cdf(d / np.sqrt(2))
    assert (df["n_in"] == 100).all() and (df["n_out"] == 100).all()
    assert (df["flag"] == "").all()
    for val in np.unique(d):
        sel = d == val
        t = norm.cdf(val / np.sqrt(2))
        se = df.loc[sel, "auc_se"].mean()
        # mean over 500 records: error of the mean ~ SE / sqrt(500)
        assert abs(df.loc[sel, "auc_raw"].mean() - t) < 4 * se / np.sqrt(500) + 2e-3
        assert abs(df.loc[sel, "auc_empirical"].mean() - t) < 4 * se / np.sqrt(500)
    # every record: binormal and empirical agree within sampling error
    z = (df["auc_raw"] - truth) / df["auc_se"]
    assert np.mean(np.abs(z) < 3.5) > 0.99
    # clipping only moves values below 0.5
    assert np.allclose(df["auc"], np.clip(df["auc_raw"], 0.5, 1.0))
    assert (df.loc[d == 0, "auc_raw"] < 0.5).any()  # raw is kept unclipped


def test_se_matches_replicate_spread():
    # 2000 records with the same separation = 2000 replicates of one record's AUC
    scores, mask = _simulate(1, 200, 2000, 1.0)
    df = record_statistics(scores, mask)
    se = df["auc_se"].mean()
    assert 0.85 < df["auc_empirical"].std() / se < 1.15
    assert 0.8 < df["auc_raw"].std() / se < 1.15


def test_hanley_mcneil_hand_computation():
    # A = 0.8, 100/100: Q0 = 2/3, Q1 = 1.28/1.8; numerator = 0.16 + 99 (2/3 - .64) + 99 (1.28/1.8 - .64)
    num = 0.16 + 99 * (2 / 3 - 0.64) + 99 * (1.28 / 1.8 - 0.64)
    assert num == pytest.approx(9.84)
    assert hanley_mcneil_se(np.array([0.8]), np.array([100]), np.array([100]))[0] == pytest.approx(np.sqrt(9.84 / 10000), rel=1e-12)
    # asymmetric counts use Q0 for the IN side and Q1 for the OUT side
    a, n1, n0 = 0.9, 10, 40
    q0, q1 = a / (2 - a), 2 * a * a / (1 + a)
    expected = np.sqrt((a * (1 - a) + (n1 - 1) * (q0 - a * a) + (n0 - 1) * (q1 - a * a)) / (n1 * n0))
    assert hanley_mcneil_se(a, n1, n0) == pytest.approx(expected, rel=1e-12)
    assert hanley_mcneil_se(1.0, 100, 100) == 0.0
    assert np.isnan(hanley_mcneil_se(0.7, 0, 10))
    assert np.isnan(hanley_mcneil_se(np.nan, 10, 10))


def test_binormal_auc_values():
    assert binormal_auc(1.0, 0.0, 1.0, 1.0) == pytest.approx(norm.cdf(1 / np.sqrt(2)))
    assert binormal_auc(0.0, 1.0, 1.0, 1.0) == pytest.approx(1 - norm.cdf(1 / np.sqrt(2)))
    assert binormal_auc(1.0, 0.0, 0.0, 0.0) == 1.0
    assert binormal_auc(0.0, 1.0, 0.0, 0.0) == 0.0
    assert np.isnan(binormal_auc(1.0, 1.0, 0.0, 0.0))


def test_empirical_auc_matches_sklearn_with_ties_and_missing():
    rng = np.random.default_rng(3)
    m, n, v = 30, 40, 2
    scores = np.round(rng.normal(size=(m, n, v)), 1)  # many ties
    mask = rng.random((m, n)) < 0.5
    scores[rng.random((m, n, v)) < 0.05] = np.nan
    df = record_statistics(scores, mask)
    for j in range(n):
        valid = np.isfinite(scores[:, j, :]).all(axis=1)
        x = scores[valid, j, :].mean(axis=1)
        y = mask[valid, j]
        assert df.loc[j, "n_in"] == y.sum() and df.loc[j, "n_out"] == (~y).sum()
        assert df.loc[j, "auc_empirical"] == pytest.approx(roc_auc_score(y, x), abs=1e-12)
        # per-view stats over the same models, then averaged over views
        assert df.loc[j, "mu_in"] == pytest.approx(scores[valid, j, :][y].mean(axis=0).mean())
        assert df.loc[j, "sd_out"] == pytest.approx(scores[valid, j, :][~y].std(axis=0).mean())


def test_blocking_gives_same_result(monkeypatch):
    scores, mask = _simulate(4, 20, 103, 0.7, v=2)
    full = record_statistics(scores, mask)
    monkeypatch.setattr(ra, "_BLOCK_ELEMENTS", 7 * 20 * 2)
    blocked = record_statistics(scores, mask)
    assert full.equals(blocked)


def test_degenerate_records_are_flagged_not_numbers():
    m, n = 6, 5
    mask = np.zeros((m, n), dtype=bool)
    mask[:3] = True
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(m, n, 2))
    scores[:, 0, :] = 0.1  # constant, equal means (0.1 * 3 / 3 != 0.1 in floating point)
    scores[:3, 1, :] = 0.3  # constant IN, constant OUT, different
    scores[3:, 1, :] = 0.1
    scores[:2, 2, :] = np.nan  # only 1 IN model left
    scores[3:, 3, 0] = np.inf  # OUT models all non-finite in one view
    scores[:3, 4, :] = 0.1  # constant IN, OUT spread (not degenerate)
    df = record_statistics(scores, mask, min_per_side=2)
    assert df["flag"].tolist() == ["zero_variance", "zero_variance", "too_few_models", "too_few_models", ""]
    aucs = ["auc_raw", "auc", "auc_se", "auc_empirical"]
    assert df.loc[0, aucs].isna().all()
    assert df.loc[0, "sd_in"] == 0.0 and df.loc[0, "sd_out"] == 0.0 and df.loc[0, "mu_in"] == 0.1
    assert df.loc[1, "auc_raw"] == 1.0 and df.loc[1, "auc"] == 1.0 and df.loc[1, "auc_se"] == 0.0
    assert df.loc[1, "auc_empirical"] == 1.0
    assert df.loc[[2, 3], aucs].isna().all().all()
    assert df.loc[2, "n_in"] == 1 and df.loc[3, "n_out"] == 0
    assert np.isfinite(df.loc[4, aucs].astype(float)).all()
    # reversed perfect separation: raw 0, clipped 0.5
    df2 = record_statistics(scores[:, [1]], ~mask[:, [1]])
    assert df2.loc[0, "auc_raw"] == 0.0 and df2.loc[0, "auc"] == 0.5 and df2.loc[0, "flag"] == "zero_variance"
    for col in ("n_in", "n_out", "flag"):
        assert not df[col].isna().any()
    assert df["n_in"].dtype == np.int64


def test_all_nan_model_rows_and_shapes():
    scores = np.full((4, 3, 1), np.nan)
    df = record_statistics(scores, np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]], dtype=bool))
    assert (df["flag"] == "too_few_models").all()
    assert (df["n_in"] == 0).all()
    assert len(record_statistics(np.zeros((3, 0, 2)), np.zeros((3, 0), dtype=bool))) == 0
    with pytest.raises(ValueError):
        record_statistics(np.zeros((3, 2, 1)), np.zeros((2, 3), dtype=bool))


_COLS = ["n_in", "n_out", "mu_in", "mu_out", "sd_in", "sd_out", "auc_raw", "auc", "auc_se", "auc_empirical"]


def _random_case(seed: int, m: int, n: int, v: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(m, n, v)) * 3
    if ties:
        scores = np.round(scores)
    scores[rng.random((m, n, v)) < 0.1] = np.nan
    mask = rng.random((m, n)) < 0.5
    return scores, mask


def _assert_frames_close(a, b):
    assert a["flag"].tolist() == b["flag"].tolist()
    np.testing.assert_allclose(a[_COLS].to_numpy(float), b[_COLS].to_numpy(float), rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(2, 12),
    n=st.integers(1, 6),
    v=st.integers(1, 3),
    ties=st.booleans(),
)
def test_permuting_models_changes_nothing(seed, m, n, v, ties):
    scores, mask = _random_case(seed, m, n, v, ties)
    perm = np.random.default_rng(seed + 1).permutation(m)
    _assert_frames_close(record_statistics(scores, mask), record_statistics(scores[perm], mask[perm]))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(2, 12),
    n=st.integers(1, 6),
    v=st.integers(1, 3),
    ties=st.booleans(),
)
def test_permuting_records_permutes_rows(seed, m, n, v, ties):
    scores, mask = _random_case(seed, m, n, v, ties)
    perm = np.random.default_rng(seed + 2).permutation(n)
    base = record_statistics(scores, mask)
    permuted = record_statistics(scores[:, perm], mask[:, perm])
    _assert_frames_close(base.iloc[perm].reset_index(drop=True), permuted)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(2, 12),
    n=st.integers(1, 6),
    v=st.integers(1, 3),
    ties=st.booleans(),
)
def test_flipping_in_out_mirrors_auc(seed, m, n, v, ties):
    scores, mask = _random_case(seed, m, n, v, ties)
    a = record_statistics(scores, mask)
    b = record_statistics(scores, ~mask)
    np.testing.assert_allclose(b["auc_raw"], 1 - a["auc_raw"], atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(b["auc_empirical"], 1 - a["auc_empirical"], atol=1e-12, equal_nan=True)
    assert (a["n_in"].to_numpy() == b["n_out"].to_numpy()).all()
    assert a["flag"].tolist() == b["flag"].tolist()


def test_se_vs_model_count():
    d = np.linspace(0, 3, 300)
    scores, mask = _simulate(6, 200, d.size, d, v=2)
    out = se_vs_model_count(scores, mask, model_counts=(20, 50, 100, 200, 400), seed=0)
    assert sorted(set(out["n_models"])) == [20, 50, 100, 200]  # 400 infeasible: skipped
    assert set(out["scope"]) == {"all", "top1pct"}
    allr = out[out["scope"] == "all"].set_index("n_models")
    assert (allr["n_records"] == 300).all()
    se = allr["se_median"].to_numpy()
    assert np.all(np.diff(se) < 0)  # SE shrinks with more models
    assert se[0] / se[-1] == pytest.approx(np.sqrt(10), rel=0.2)  # ~ 1/sqrt(n)
    top = out[out["scope"] == "top1pct"]
    assert (top["n_records"] == 3).all()
    assert (top["auc_median"] > allr["auc_median"].to_numpy()).all()
    # deterministic
    again = se_vs_model_count(scores, mask, model_counts=(20, 50, 100, 200, 400), seed=0)
    assert out.equals(again)
    # with all models, the count-200 row equals the full-pool statistics
    full = record_statistics(scores, mask)
    assert allr.loc[200, "se_median"] == pytest.approx(full["auc_se"].median())
