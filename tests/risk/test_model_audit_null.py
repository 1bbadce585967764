"""Verdicts against an audited model's own non-members (tasks/risk/model_audit_null.py) against closed forms,
brute-force definitions and simulation with known ground truth; the sanity gate's metric against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.audit.model_sanity import SanityError, auroc, sanity_check, task_metric
from tasks.datasets.base import TaskSpec
from tasks.risk.fdr import bh_qvalues
from tasks.risk.model_audit_null import (
    calibration,
    empirical_pvalues,
    far_from_uniform,
    member_verdict,
    newcombe_diff_interval,
)

BINARY = TaskSpec(
    kind="binary", label_names=("y",), input_shape=(3,), modality="tabular", score_transform="binary_logit", default_architecture="mlp"
)


def test_empirical_pvalues_match_the_definition_and_are_valid_under_any_null() -> None:
    rng = np.random.default_rng(0)
    null = rng.beta(5, 1, size=200)  # far from uniform, as for a model unlike its references
    risk = rng.beta(5, 1, size=50)
    brute = np.array([(1 + (null >= r).sum()) / (1 + len(null)) for r in risk])
    np.testing.assert_allclose(empirical_pvalues(risk, null), brute)
    assert np.isnan(empirical_pvalues(np.array([np.nan]), null)[0])
    # exchangeable members: P(p <= a) <= a at every a (super-uniform), whatever the null's shape
    hits = np.zeros(3)
    for _ in range(400):
        allv = rng.beta(5, 1, size=101)
        p = empirical_pvalues(allv[:1], allv[1:])[0]
        hits += p <= np.array([0.05, 0.2, 0.5])
    assert (hits / 400 <= np.array([0.05, 0.2, 0.5]) + 0.04).all()


def test_bh_qvalues_against_the_step_up_definition() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 0.002, size=20), [np.nan]])
    q = bh_qvalues(p)
    ok = np.isfinite(p)
    n = int(ok.sum())
    for alpha in (0.01, 0.05, 0.2):
        ps = np.sort(p[ok])
        below = np.flatnonzero(ps <= alpha * np.arange(1, n + 1) / n)
        k = below[-1] + 1 if len(below) else 0  # the step-up procedure rejects the k smallest
        assert int((q[ok] <= alpha).sum()) == k
    assert np.isnan(q[-1]) and (q[ok] >= p[ok]).all() and (q[ok] <= 1).all()
    order = np.argsort(p[ok])
    assert (np.diff(q[ok][order]) >= -1e-15).all()  # monotone in p


def test_newcombe_interval_closed_form_and_coverage() -> None:
    # Newcombe (1998), Table II example: 56/70 vs 48/80 -> 0.0524 to 0.3339
    lo, hi = newcombe_diff_interval(56, 70, 48, 80)
    assert lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)
    rng = np.random.default_rng(2)
    cover = 0
    for _ in range(2000):
        k1, k2 = rng.binomial(150, 0.2), rng.binomial(300, 0.12)
        lo, hi = newcombe_diff_interval(int(k1), 150, int(k2), 300)
        cover += lo <= 0.08 <= hi
    assert 0.93 <= cover / 2000 <= 0.97


def test_calibration_and_verdict_on_simulated_audits() -> None:
    rng = np.random.default_rng(3)
    uniform = rng.uniform(size=5000)
    cal = calibration(uniform)
    assert [c["nominal"] for c in cal] == pytest.approx([0.5, 0.1, 0.01])
    assert all(abs(c["share"] - c["nominal"]) < 0.02 for c in cal)
    assert not far_from_uniform(uniform, 0.9)
    skewed = rng.beta(4, 1, size=500)  # 34% above 0.9: like an overfit model against default references
    assert far_from_uniform(skewed, 0.9)
    # no leakage: members drawn like non-members -> nothing significant, the interval covers 0
    v = member_verdict(rng.beta(4, 1, size=300), skewed, 0.9, 0.05)
    assert v["n_member_patients_significant"] == 0 and v["excess_patients_at_risk_ci"][0] < 0 < v["excess_patients_at_risk_ci"][1]
    assert v["members_above_non_members_p"] > 0.01 and v["calibration_far_from_uniform"]
    # leakage: 60 of 300 members far above every non-member
    mem = np.concatenate([rng.beta(4, 1, size=240), 1 - rng.uniform(0, 1e-6, size=60)])
    null = np.minimum(skewed, 1 - 1e-5)
    v = member_verdict(mem, null, 0.9, 0.05)
    assert v["n_member_patients_significant"] >= 55 and v["excess_patients_at_risk_ci"][0] > 0 and v["members_above_non_members_p"] < 1e-3


def test_task_metric_and_sanity_gate() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=400).astype(float)
    z = y * 1.5 + rng.normal(size=400)
    assert auroc(z, y) == pytest.approx(roc_auc_score(y, z))
    logits, labels = z[:, None, None].astype(np.float32), y[:, None]
    member = np.arange(400) < 200
    name, value, chance = task_metric(logits, labels, BINARY, ~member)
    assert name == "AUROC" and chance == 0.5 and value == pytest.approx(roc_auc_score(y[200:], z[200:]))
    ok = sanity_check(logits, labels, member, BINARY, min_auroc=0.55, force=False)
    assert ok["sanity_passed"] and not ok["sanity_forced"]
    with pytest.raises(SanityError, match=r"inverted \(below chance\).*logits flipped or mis-mapped.*--force"):
        sanity_check(-logits, labels, member, BINARY, min_auroc=0.55, force=False)
    forced = sanity_check(-logits, labels, member, BINARY, min_auroc=0.55, force=True)
    assert forced["sanity_forced"] and not forced["sanity_passed"]
    # working, but far below what a linear model on the data reaches: the wrong-inputs signature
    weak = (y * 0.8 + rng.normal(size=400))[:, None, None].astype(np.float32)
    with pytest.raises(SanityError, match="below what a logistic regression"):
        sanity_check(weak, labels, member, BINARY, min_auroc=0.55, force=False, baseline=0.9, max_baseline_gap=0.15)
