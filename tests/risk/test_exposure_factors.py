"""Rarity, atypicality and overlapping label groups (tasks/risk/exposure_factors.py) against ground truth.

Score arrays are simulated with known structure: per record a typical fit (the OUT models' mean score)
and a memorisation gain (how much higher the IN models score it). Planted rare-label records and
planted atypical records are memorised; everything else is not. The null cohort draws the gains
independently of labels and fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact, hypergeom, spearmanr

from tasks.attacks.record_auc import record_statistics
from tasks.risk import exposure_factors as ef
from tasks.risk.subgroup import holm_adjust

M = 32
PREVALENCE = np.array([0.5, 0.3, 0.2, 0.1, 0.02])  # the last label is the rare diagnosis
THRESHOLD = 0.9


def simulate(n: int, seed: int, planted: bool) -> dict[str, np.ndarray]:
    """One record per patient; scores (M, n), in_mask (M, n), labels (n, C), truth masks."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(PREVALENCE))) < PREVALENCE).astype(float)
    rare = labels[:, -1] > 0
    fit = rng.normal(3.0, 1.0, n) - 1.5 * rare  # rare-label records are fitted worse as a group, not atypically
    atypical = np.zeros(n, dtype=bool)
    if planted:
        atypical[rng.choice(np.flatnonzero(~rare), size=n // 30, replace=False)] = True
        fit[atypical] -= 4.0  # the models that never saw them get them wrong ...
        gain = np.where(atypical | rare, 3.0, 0.1)  # ... and the ones that did memorise them (and the rare ones)
    else:
        gain = rng.exponential(0.8, n)  # exposure independent of labels and fit
    in_mask = rng.random((M, n)) < 0.5
    scores = fit[None, :] + gain[None, :] * in_mask + rng.normal(0.0, 1.0, (M, n))
    return {"scores": scores, "in_mask": in_mask, "labels": labels, "rare": rare, "atypical": atypical}


def factors(sim: dict[str, np.ndarray]) -> pd.DataFrame:
    st = record_statistics(sim["scores"], sim["in_mask"]).join(ef.crossfit_statistics(sim["scores"], sim["in_mask"]))
    train = np.ones(len(st), dtype=bool)
    st["prevalence"] = ef.label_prevalence(sim["labels"], train)
    st["atypicality"] = ef.atypicality(st["mu_out_half"].to_numpy(), sim["labels"])
    return st


def test_planted_rare_labels_and_atypical_records_are_over_represented_among_the_exposed() -> None:
    sim = simulate(3000, seed=1, planted=True)
    st = factors(sim)
    exposed = (st["auc"] >= THRESHOLD).to_numpy()
    crossfit = st["auc_crossfit"].to_numpy()
    tests = ef.exposure_tests("record", st["auc"], exposed, st["prevalence"], st["atypicality"], crossfit, crossfit >= THRESHOLD)
    tests = tests.set_index("factor")
    assert tests.loc["rarity", "p_value"] < 1e-6 and tests.loc["rarity", "observed"] > 3 * tests.loc["rarity", "expected"]
    atyp = tests.loc["atypicality"]
    assert atyp["p_value"] < 1e-6 and atyp["share_exposed_in_set"] > 0.3 and abs(atyp["share_all_in_set"] - 0.1) < 0.001
    assert atyp["spearman_lo"] > 0  # risk rises with atypicality
    # the planted atypical records are what the atypicality measure finds (within-label standardisation
    # does not flag the rare label's records merely for being fitted worse as a group)
    top = ef.top_bin(st["atypicality"].to_numpy())
    assert sim["atypical"][top].mean() > 0.25 and sim["rare"][top].mean() < 0.1
    # typical records of common labels are not over-represented among the exposed
    typical = ~sim["rare"] & ~sim["atypical"]
    assert ef.enrichment(typical, exposed)["p_value"] > 0.5
    # label groups: the rare label is over-represented in the top set, the common ones are not
    table = ef.label_group_table(st["auc"], sim["labels"] > 0.5, ["a", "b", "c", "d", "rare"], risk_threshold=THRESHOLD, n_boot=200)
    rows = table.set_index("group")
    assert rows.loc["rare", "p_holm"] < 1e-3 and rows.loc["rare", "pearson_residual"] > 3
    assert (rows.loc[["a", "b", "c", "d"], "pearson_residual"] < 2).all()
    assert table["chi2_p"].isna().all()  # no chi-square over overlapping groups


def test_nothing_planted_gives_no_signal_beyond_chance() -> None:
    """Null cohorts, at record level and for patients of 1-6 records (each takes the rarity and atypicality
    of the record that sets their risk): the one-sided enrichment tests reject at about the nominal 5%,
    the rho interval covers 0."""
    p_values: dict[tuple[str, str], list[float]] = {}
    rho_cover = []
    for seed in range(100):
        st = factors(simulate(600, seed=100 + seed, planted=False))
        rng = np.random.default_rng(seed)
        codes = np.repeat(np.arange(600), rng.integers(1, 7, 600))[:600]  # patients with different record counts
        auc, cross = st["auc"].to_numpy(), st["auc_crossfit"].to_numpy()
        prev, atyp = st["prevalence"].to_numpy(), st["atypicality"].to_numpy()
        n_pat = codes.max() + 1
        levels = {
            "record": (auc, cross, prev, atyp),
            "patient": (
                pd.Series(auc).groupby(codes).max().to_numpy(),
                pd.Series(cross).groupby(codes).max().to_numpy(),
                ef.value_at_max(codes, auc, prev, n_pat),
                ef.value_at_max(codes, cross, atyp, n_pat),
            ),
        }
        for level, (risk, crossfit, pr, at) in levels.items():
            # the 10% most exposed
            exposed, exposed_x = risk >= np.quantile(risk, 0.9), crossfit >= np.nanquantile(crossfit, 0.9)
            t = ef.exposure_tests(level, risk, exposed, pr, at, crossfit, exposed_x).set_index("factor")
            for factor in ("rarity", "atypicality"):
                p_values.setdefault((level, factor), []).append(t.loc[factor, "p_value"])
            rho_cover.append(t.loc["atypicality", "spearman_lo"] <= 0 <= t.loc["atypicality", "spearman_hi"])
    for p in p_values.values():
        p = np.array(p)
        assert np.isfinite(p).sum() >= 90  # NaN: no patient's most exposed record carries a rare label
        assert (p < 0.05).sum() <= 11  # binomial(100, 0.05): P(>= 12 rejections) < 0.01
    assert np.mean(rho_cover) >= 0.89  # 200 intervals at 95%


def test_a_patient_takes_the_values_of_the_record_that_sets_their_risk() -> None:
    codes = np.array([0, 0, 1, 1, 2, 3])
    by = np.array([0.5, 0.9, np.nan, 0.7, np.nan, 0.6])
    np.testing.assert_array_equal(ef.value_at_max(codes, by, np.arange(1.0, 7.0), 5), [2.0, 4.0, np.nan, 6.0, np.nan])


def test_label_prevalence_is_the_rarest_positive_labels_training_share() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    train = np.array([True, True, True, True, False, False])
    prev = ef.label_prevalence(labels, train)
    # training shares: label0 2/4, label1 1/4, label2 1/4, no label 1/4
    np.testing.assert_allclose(prev, [0.5, 0.25, 0.25, 0.25, 0.5, 0.25])
    assert np.isnan(ef.label_prevalence(labels, np.zeros(6, dtype=bool))).all()
    assert list(ef.label_sets(labels[:3], ["x", "y", "z"])) == ["x", "x+y", ef.NO_LABEL]


def test_atypicality_standardises_within_label_combination() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([[1, 0], [0, 1], [1, 1]], dtype=float), [30, 30, 3], axis=0)
    mu = np.concatenate([rng.normal(5, 1, 30), rng.normal(-5, 2, 30), rng.normal(0, 1, 3)])
    mu[0] = np.nan
    z = ef.atypicality(mu, labels)
    assert np.isnan(z[0])
    a = mu[1:30]
    np.testing.assert_allclose(z[1:30], -(a - a.mean()) / a.std(ddof=1))
    b = mu[30:60]
    np.testing.assert_allclose(z[30:60], -(b - b.mean()) / b.std(ddof=1))
    assert np.isfinite(z[60:]).all()  # the 3-record combination is pooled, not left out


def test_enrichment_is_the_one_sided_hypergeometric_test() -> None:
    rng = np.random.default_rng(3)
    in_set = rng.random(400) < 0.1
    exposed = rng.random(400) < 0.2
    res = ef.enrichment(in_set, exposed)
    k, m, obs = exposed.sum(), in_set.sum(), (in_set & exposed).sum()
    assert res["p_value"] == pytest.approx(hypergeom.sf(obs - 1, 400, m, k))
    assert res["expected"] == pytest.approx(k * m / 400)
    assert res["share_lo"] <= res["share_exposed_in_set"] <= res["share_hi"]
    assert np.isnan(ef.enrichment(in_set, np.zeros(400, dtype=bool))["p_value"])


def test_spearman_interval_matches_scipy_and_covers() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    res = ef.spearman_ci(x, y)
    assert res["spearman_rho"] == pytest.approx(spearmanr(x, y).statistic)
    assert res["spearman_lo"] < res["spearman_rho"] < res["spearman_hi"]
    cover = []
    for s in range(300):  # the true rho of the bivariate normal with r = 1/sqrt(5): (6/pi) asin(r/2)
        r = np.random.default_rng(s)
        a = r.normal(size=150)
        b = 0.5 * a + r.normal(size=150)
        c = ef.spearman_ci(a, b)
        cover.append(c["spearman_lo"] <= 6 / np.pi * np.arcsin(0.5 / np.sqrt(1.25) / 2) <= c["spearman_hi"])
    assert 0.91 <= np.mean(cover) <= 0.985


def test_label_group_rows_match_a_direct_fisher_and_holm() -> None:
    rng = np.random.default_rng(7)
    risk = rng.random(500)
    risk[:5] = np.nan
    mem = rng.random((500, 3)) < [0.4, 0.1, 0.6]
    table = ef.label_group_table(risk, mem, ["a", "b", "c"], top_fraction=0.1, n_boot=100)
    ok = np.isfinite(risk)
    r, mm = risk[ok], mem[ok]
    top = np.zeros(r.size, dtype=bool)
    top[np.argsort(-r, kind="stable")[:50]] = True
    ps = []
    for c in range(3):
        obs = int((mm[:, c] & top).sum())
        n_c = int(mm[:, c].sum())
        row = table.iloc[c]
        assert row["units"] == n_c and row["top_observed"] == obs and row["top_expected"] == pytest.approx(n_c * 50 / r.size)
        ps.append(fisher_exact([[obs, n_c - obs], [50 - obs, r.size - n_c - 50 + obs]]).pvalue)
    np.testing.assert_allclose(table["p_value"], ps)
    np.testing.assert_allclose(table["p_holm"], holm_adjust(np.array(ps)))


def test_bins() -> None:
    assert list(ef.rarity_bins(np.array([0.001, 0.02, 0.1, 0.5, 1.0, np.nan]))) == [*ef.RARITY_LABELS, ef.RARITY_LABELS[-1], "<NA>"]
    v = np.arange(100.0)
    v[3] = np.nan
    bins = ef.atypicality_bins(v)
    assert bins[3] == "<NA>" and (bins == "10/10").sum() == 9 and bins[99] == "10/10" and bins[0] == "01/10"
    assert (
        ef.attribute_kind("density") == "label"
        and ef.attribute_kind("race×disease") == "label"
        and ef.attribute_kind("sex") == "demographic"
    )
