"""LiRA: reference fitting, optimality on Gaussian data, numerical guards, LOSS baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from tasks.attacks import get_attack, list_attacks
from tasks.attacks.auc import roc_auc
from tasks.attacks.base import AttackContext, AttackInputs
from tasks.attacks.lira import LiraReference, fit_lira_reference, lira_offline, lira_online
from tasks.attacks.loss import loss_attack


def _gaussian_pool(seed: int, m: int, t: int, n: int, d: float, v: int = 2):
    """Records with their own OUT mean/std; IN shifted by d standard deviations."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n)
    sd = rng.uniform(0.5, 2.0, n)
    mask = rng.random((m + t, n)) < 0.5
    scores = mu[None, :, None] + sd[None, :, None] * (rng.standard_normal((m + t, n, v)) + d * mask[:, :, None])
    return scores[:m], mask[:m], scores[m:], mask[m:]


def test_fit_reference_medians_and_stds():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(9, 4, 2))
    mask = rng.random((9, 4)) < 0.5
    mask[:2] = True
    mask[2:4] = False
    s[0, 1, 1] = np.nan  # model 0 drops out of record 1 entirely
    ref = fit_lira_reference(s, mask)
    for j in range(4):
        valid = np.isfinite(s[:, j]).all(axis=1)
        for side, mu, sd, cnt in (
            (mask[:, j], ref.mu_in, ref.sd_in, ref.n_in),
            (~mask[:, j], ref.mu_out, ref.sd_out, ref.n_out),
        ):
            sel = valid & side
            assert cnt[j] == sel.sum()
            np.testing.assert_allclose(mu[j], np.median(s[sel, j], axis=0))
            np.testing.assert_allclose(sd[j], np.std(s[sel, j], axis=0))
    assert ref.n_in[1] == mask[:, 1].sum() - 1
    assert ref.sd_in_global == pytest.approx(np.median(ref.sd_in[ref.n_in >= 2]))


def test_online_lira_reaches_the_optimal_auc():
    d = 1.0
    ref_s, ref_in, tgt_s, tgt_in = _gaussian_pool(1, 128, 4, 4000, d, v=1)
    ref = fit_lira_reference(ref_s, ref_in)
    scores = lira_online(tgt_s, ref)
    assert scores.shape == (4, 4000)
    optimum = norm.cdf(d / np.sqrt(2))  # equal-variance Gaussians, same standardised shift for all
    aucs = [roc_auc(scores[i], tgt_in[i]) for i in range(4)]
    # pooled over 16000 records the sampling SE of the AUC is ~0.004
    assert np.mean(aucs) == pytest.approx(optimum, abs=0.012)
    off = lira_offline(tgt_s, ref)
    assert np.mean([roc_auc(off[i], tgt_in[i]) for i in range(4)]) == pytest.approx(optimum, abs=0.012)
    # ignoring the per-record calibration (LOSS) is much worse here
    loss = loss_attack(tgt_s)
    assert np.mean([roc_auc(loss[i], tgt_in[i]) for i in range(4)]) < optimum - 0.1


def test_online_beats_offline_with_unequal_variances():
    rng = np.random.default_rng(2)
    m, t, n = 128, 4, 4000
    mask = rng.random((m + t, n)) < 0.5
    # members: same mean, much smaller spread -> only a two-sided (online) test can see it
    s = np.where(mask, rng.normal(0, 0.3, (m + t, n)), rng.normal(0, 1.0, (m + t, n)))[:, :, None]
    ref = fit_lira_reference(s[:m], mask[:m])
    on = lira_online(s[m:], ref)
    off = lira_offline(s[m:], ref)
    auc_on = np.mean([roc_auc(on[i], mask[m + i]) for i in range(t)])
    auc_off = np.mean([roc_auc(off[i], mask[m + i]) for i in range(t)])
    assert auc_on > 0.75 and abs(auc_off - 0.5) < 0.05


def test_formulas_by_hand():
    ref = LiraReference(
        mu_in=np.array([[1.0]]),
        mu_out=np.array([[0.0]]),
        sd_in=np.array([[2.0]]),
        sd_out=np.array([[0.5]]),
        sd_in_global=1.0,
        sd_out_global=1.0,
        n_in=np.array([5]),
        n_out=np.array([5]),
    )
    s = np.array([[[0.7]]])
    expected = norm.logpdf(0.7, 1.0, 2.0) - norm.logpdf(0.7, 0.0, 0.5)
    assert lira_online(s, ref)[0, 0] == pytest.approx(expected, rel=1e-12)
    assert lira_online(s, ref, fix_variance=True)[0, 0] == pytest.approx(norm.logpdf(0.7, 1.0, 1.0) - norm.logpdf(0.7, 0.0, 1.0), rel=1e-12)
    assert lira_offline(s, ref)[0, 0] == pytest.approx(norm.logcdf(0.7 / 0.5), rel=1e-12)
    # view averaging
    ref2 = LiraReference(
        np.array([[1.0, 1.0]]),
        np.array([[0.0, 0.0]]),
        np.ones((1, 2)),
        np.ones((1, 2)),
        1.0,
        1.0,
        np.array([3]),
        np.array([3]),
    )
    s2 = np.array([[[0.0, 2.0]]])
    assert lira_online(s2, ref2)[0, 0] == pytest.approx(np.mean([-0.5, 1.5]))


def test_zero_std_is_floored_and_nan_propagates():
    s = np.zeros((6, 2, 1))
    s[:3, :, 0] = 1.0  # IN models constant 1, OUT constant 0 -> zero stds
    mask = np.zeros((6, 2), dtype=bool)
    mask[:3] = True
    ref = fit_lira_reference(s, mask)
    assert (ref.sd_in == 0).all() and (ref.sd_out == 0).all()
    target = np.array([[[1.0], [0.0]], [[np.nan], [0.5]]])
    on = lira_online(target, ref)
    off = lira_offline(target, ref)
    assert np.isfinite(on[0]).all() and np.isfinite(on[1, 1]) and np.isnan(on[1, 0])
    assert on[0, 0] > 0 > on[0, 1]
    assert np.isfinite(off[0]).all() and np.isnan(off[1, 0])
    assert np.isfinite(lira_online(target[:1], ref, fix_variance=True)).all()


def test_record_without_references_is_nan():
    s = np.random.default_rng(3).normal(size=(4, 2, 1))
    mask = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
    ref = fit_lira_reference(s, mask)
    out = lira_online(s[:1], ref)
    assert np.isfinite(out[0, 0]) and np.isnan(out[0, 1])  # record 1 has no IN models
    assert np.isfinite(lira_offline(s[:1], ref)).all()


def test_registry_and_loss():
    assert [a.name for a in list_attacks("pool")] == [
        "lira_online",
        "lira_offline",
        "lira_online_fixed_var",
        "lira_offline_fixed_var",
        "loss",
        "rmia_online",
        "rmia_offline",
    ]
    assert [a.name for a in list_attacks("model")] == ["lira_offline", "loss", "rmia_offline"]
    assert all(a.version == "1" for a in list_attacks("pool"))
    s = np.array([[[1.0, 3.0], [np.nan, 1.0]]])
    loss = get_attack("loss", "pool")(AttackContext("pool", 2, "logit"))
    out = loss.score(AttackInputs(np.zeros((0, 2), dtype=bool), target_scores=s))
    assert out[0, 0] == 2.0 and np.isnan(out[0, 1])
