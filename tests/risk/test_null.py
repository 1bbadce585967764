"""The swap null, the FDR rule and the record interval (tasks/risk/null.py, docs/STATISTICS.md).

Independent references: brute-force enumeration of every swap through record_statistics, scipy's
Benjamini-Hochberg, and simulation with planted memorised patients of known strength.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import ndtr, ndtri
from scipy.stats import false_discovery_control

from tasks.attacks.record_auc import auc_interval_nct, hanley_mcneil_se, record_statistics
from tasks.audit.simulate import audit_simulated, simulate_pool
from tasks.risk.fdr import bh_qvalues
from tasks.risk.null import SwapNull, assess_evidence, minimum_models, pair_layout, patient_max_z, swap_z
from tasks.training.masks import pool_masks


def _small_pool(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """8 paired models + one unpaired (model 9 without 8), 2 views, missing scores, 12 patients."""
    rng = np.random.default_rng(seed)
    n, p = 40, 12
    codes = rng.integers(0, p, n)
    models = [0, 1, 2, 3, 4, 5, 6, 7, 9]
    masks = pool_masks(p, 3, 10)[models][:, codes]
    s = rng.normal(size=(len(models), n, 2)) + 1.5 * masks[:, :, None] * (codes[None, :, None] < 3)
    s[2, 3, :] = np.nan  # a model that did not score a record
    s[5, 7, 0] = np.nan  # one view missing: the model does not count for that record
    s[:, 11, :] = 0.25  # a constant record (zero variance, equal means)
    return s, masks, codes, models


def _swapped(mask: np.ndarray, first: np.ndarray, second: np.ndarray, signs: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for k, sg in enumerate(signs):
        if sg < 0:
            out[[first[k], second[k]]] = out[[second[k], first[k]]]
    return out


def test_identity_swap_reproduces_the_binormal_auc() -> None:
    s, mask, _, models = _small_pool()
    first, second, fixed = pair_layout(models)
    assert len(first) == 4 and fixed.tolist() == [8]
    z = swap_z(s, mask, first, second, np.ones((1, 4)))[0]
    np.testing.assert_allclose(ndtr(z), record_statistics(s, mask)["auc_raw"].to_numpy(), atol=1e-12, equal_nan=True)


def test_null_equals_brute_force_enumeration_of_all_swaps() -> None:
    s, mask, codes, models = _small_pool()
    n_pat = int(codes.max()) + 1
    every = np.array(list(itertools.product([1.0, -1.0], repeat=4)))  # all 16 swaps of 4 pairs
    null = SwapNull(models, n_pat, n_swaps=16, seed=0, threshold=0.9, signs=every)
    obs = null.add(s[:, :25], mask[:, :25], codes[:25])  # two blocks: patients span both
    obs = np.concatenate([obs, null.add(s[:, 25:], mask[:, 25:], codes[25:])])
    res = null.finish(patient_max_z(obs, codes, n_pat))
    brute = np.stack(
        [record_statistics(s, _swapped(mask, null.first, null.second, sg))["auc_raw"].to_numpy() for sg in null.signs]
    )  # (16, N)
    # every null statistic equals recomputing the records with the swapped masks
    np.testing.assert_allclose(res.record_chance, (brute >= 0.9).mean(axis=0))
    assert res.record_expected == pytest.approx((brute >= 0.9).sum() / 16)
    bz = np.where(np.isnan(brute), -np.inf, ndtri(brute))
    pmax = np.full((16, n_pat), -np.inf)
    for b in range(16):
        np.maximum.at(pmax[b], codes, bz[b])
    np.testing.assert_allclose(ndtr(res.patient_null_max), ndtr(pmax), atol=1e-12)
    assert res.patient_expected == pytest.approx(((ndtr(pmax) >= 0.9) & (pmax > -np.inf)).sum() / 16)
    # patient p-values: the pooled exact formula on the brute-force null
    pz = patient_max_z(ndtri(record_statistics(s, mask)["auc_raw"].to_numpy()), codes, n_pat)
    flat = ndtr(pmax[pmax > -np.inf])
    want = np.array([(1 + np.sum(flat >= ndtr(t) - 1e-12)) / (1 + flat.size) if np.isfinite(t) else np.nan for t in pz])
    np.testing.assert_allclose(res.patient_p, want)


def test_bh_equals_scipy() -> None:
    p = np.random.default_rng(0).random(500) ** 3
    np.testing.assert_allclose(bh_qvalues(p), false_discovery_control(p, method="bh"))
    p[::7] = np.nan
    ok = ~np.isnan(p)
    np.testing.assert_allclose(bh_qvalues(p)[ok], false_discovery_control(p[ok], method="bh"))


@pytest.mark.parametrize("n_models", [8, 16, 32])
def test_realised_fdr_at_most_nominal(n_models: int) -> None:
    # 400 patients, 5% memorised at record AUC 0.97: realised FDR of "risk >= 0.9 and q <= 0.05" over 40 pools
    fdp, power = [], []
    for rep in range(40):
        pool = simulate_pool(400, n_models, planted_share=0.05, planted_auc=0.97, seed=1000 * n_models + rep)
        a = audit_simulated(pool, seed=rep)
        fdp.append((a.at_risk & ~pool.planted).sum() / max(a.at_risk.sum(), 1))
        power.append((a.at_risk & pool.planted).sum() / pool.planted.sum())
    mc = np.std(fdp, ddof=1) / np.sqrt(len(fdp))
    assert np.mean(fdp) <= 0.05 + 2 * mc
    if n_models >= 16:
        assert np.mean(power) > 0.5  # the rule still finds the memorised patients


def test_complete_null_rarely_flags_anyone() -> None:
    # no membership effect at all: any flag is a false discovery; P(any) <= FDR level (BH under the complete null)
    hits, raw = [], []
    for rep in range(30):
        pool = simulate_pool(300, 12, planted_share=0.0, seed=7 + rep)
        a = audit_simulated(pool, seed=rep)
        hits.append(a.at_risk.any())
        raw.append(a.raw.sum() - a.expected)
    p = np.mean(hits)
    assert p <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(hits))
    # the expected-by-chance count is an unbiased estimate of the raw count under the null
    assert abs(np.mean(raw)) <= 3 * np.std(raw, ddof=1) / np.sqrt(len(raw))


@pytest.mark.parametrize("auc", [0.6, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("per_side", [4, 12])
def test_interval_coverage_at_small_n_and_near_one(auc: float, per_side: int) -> None:
    rng = np.random.default_rng(int(auc * 1000) + per_side)
    n_rec, m = 4000, 2 * per_side
    mask = np.zeros((m, n_rec), dtype=bool)
    mask[:per_side] = True
    s = rng.normal(size=(m, n_rec)) + np.sqrt(2) * ndtri(auc) * mask
    st = record_statistics(s, mask)
    lo, hi = auc_interval_nct(*(st[c].to_numpy() for c in ("mu_in", "mu_out", "sd_in", "sd_out", "n_in", "n_out")))
    cover = np.mean((lo <= auc) & (auc <= hi))
    assert cover >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / n_rec)
    if auc >= 0.99 and per_side == 4:  # Hanley-McNeil collapses near 1: its Wald interval under-covers
        se = hanley_mcneil_se(st["auc"], st["n_in"], st["n_out"])
        assert np.mean(np.abs(st["auc"].to_numpy() - auc) <= 1.96 * se) < 0.9


def test_evidence_verdicts() -> None:
    null_max = np.full((10, 100), ndtri(0.95))  # every patient at 0.95 under every swap: all noise
    ev = assess_evidence(100, 100.0, 0.5, null_max, threshold=0.9, n_models=8, max_noise_share=0.1, max_interval_width=0.2)
    assert ev.level == "insufficient" and "not enough evidence" in ev.reason and ev.n_models_needed is not None
    assert ev.n_models_needed > 8
    ev = assess_evidence(30, 0.2, 0.05, np.full((10, 100), 0.0), threshold=0.9, n_models=64, max_noise_share=0.1, max_interval_width=0.2)
    assert ev.level == "sufficient" and ev.n_models_needed == 64
    ev = assess_evidence(0, 0.0, 0.05, np.full((10, 100), 0.0), threshold=0.9, n_models=200, max_noise_share=0.1, max_interval_width=0.2)
    assert ev.level == "sufficient"  # nothing flagged and nothing expected by chance, precise top records
    assert minimum_models(2) == 6 and minimum_models(4) == 10


def test_inputs_are_not_modified() -> None:
    s, mask, _, models = _small_pool()
    s1 = s[:, :, :1].copy()  # one view: the transposed block is contiguous, i.e. a view of the input
    before = s1.copy()
    first, second, _ = pair_layout(models)
    swap_z(s1, mask, first, second, np.ones((3, 4)))
    np.testing.assert_array_equal(s1, before)
