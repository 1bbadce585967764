"""Subgroup statistics against reference implementations, and the subgroup table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare, fisher_exact
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from tasks.risk.subgroup import (
    TABLE_COLUMNS,
    _bootstrap_medians,
    bootstrap_median_ci,
    holm_adjust,
    overrepresentation,
    subgroup_table,
    suppress_small_cells,
    wilson_ci,
)


def test_wilson_matches_statsmodels():
    k = np.array([0, 1, 5, 17, 50, 100])
    n = np.array([10, 10, 20, 40, 100, 100])
    for alpha in (0.05, 0.1):
        lo, hi = wilson_ci(k, n, alpha)
        slo, shi = proportion_confint(k, n, alpha=alpha, method="wilson")
        np.testing.assert_allclose(lo, slo, atol=1e-12)
        np.testing.assert_allclose(hi, shi, atol=1e-12)
    lo, hi = wilson_ci(np.array([0]), np.array([0]))
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 30):
        p = rng.random(m) ** 3
        np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1], atol=1e-15)
    p = np.array([0.01, np.nan, 0.04])
    np.testing.assert_allclose(holm_adjust(p), [0.02, np.nan, 0.04])


def test_bootstrap_median_ci():
    rng = np.random.default_rng(1)
    for n in (7, 50, 51, 400):
        x = rng.gamma(2.0, size=n)
        lo, hi = bootstrap_median_ci(x, n_boot=2000, seed=3)
        assert lo <= np.median(x) <= hi
        assert (lo, hi) == bootstrap_median_ci(x, n_boot=2000, seed=3)  # deterministic
        # same distribution as brute-force resampling
        idx = np.random.default_rng(9).integers(0, n, (4000, n))
        blo, bhi = np.quantile(np.median(x[idx], axis=1), [0.025, 0.975])
        spread = np.subtract(*np.quantile(x, [0.75, 0.25]))
        assert abs(lo - blo) < 0.15 * spread and abs(hi - bhi) < 0.15 * spread
    assert bootstrap_median_ci(np.array([3.0]), n_boot=50) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_median_ci(np.array([np.nan])))
    x = np.array([1.0, np.nan, 2.0, 3.0])
    assert bootstrap_median_ci(x, seed=1) == bootstrap_median_ci(x[~np.isnan(x)], seed=1)


@pytest.mark.parametrize("x", [[0.0, 1.0, 10.0, 100.0], [0.0, 1.0, 10.0], [1.0, 2.0]])
def test_bootstrap_median_distribution_is_exact(x):
    """The order-statistic sampler reproduces the exact bootstrap distribution (enumerated)."""
    x = np.array(x)
    n = x.size
    grids = np.stack(np.meshgrid(*[np.arange(n)] * n, indexing="ij"), -1).reshape(-1, n)
    exact = pd.Series(np.median(x[grids], axis=1)).value_counts(normalize=True)
    draws = _bootstrap_medians(x, 40_000, np.random.default_rng(0))
    freq = pd.Series(draws).value_counts(normalize=True)
    assert set(freq.index) <= set(exact.index)
    for value, prob in exact.items():
        se = np.sqrt(prob * (1 - prob) / 40_000)
        assert abs(freq.get(value, 0.0) - prob) < 5 * se + 1e-12


def test_overrepresentation_against_scipy_and_by_key():
    rng = np.random.default_rng(2)
    groups = rng.choice(np.array(["White", "Black", "Asian", "Other"]), size=1000, p=[0.6, 0.2, 0.15, 0.05])
    top = rng.random(1000) < np.where(groups == "Black", 0.15, 0.05)
    out = overrepresentation(groups, top)
    assert list(out["group"]) == ["Asian", "Black", "Other", "White"]  # sorted keys, not input order
    k = top.sum()
    for _, r in out.iterrows():
        g = groups == r["group"]
        assert r["n"] == g.sum() and r["observed"] == (g & top).sum()
        assert r["expected"] == pytest.approx(g.sum() * k / 1000)
        assert r["pearson_residual"] == pytest.approx((r["observed"] - r["expected"]) / math.sqrt(r["expected"]))
        table = [[(g & top).sum(), (g & ~top).sum()], [(~g & top).sum(), (~g & ~top).sum()]]
        assert r["p_value"] == pytest.approx(fisher_exact(table).pvalue, rel=1e-12)
    assert out["p_holm"].tolist() == pytest.approx(list(multipletests(out["p_value"], method="holm")[1]))
    assert (out["chi2_p"] == chisquare(out["observed"], out["expected"]).pvalue).all()
    assert out.loc[out["group"] == "Black", "pearson_residual"].item() > 2
    # shuffling the units changes nothing
    perm = rng.permutation(1000)
    pd.testing.assert_frame_equal(out, overrepresentation(groups[perm], top[perm]))


def _patients(seed: int = 0, n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian"], n, p=[0.7, 0.2, 0.1])
    sex = rng.choice(["F", "M"], n)
    risk = np.clip(rng.beta(5, 5, n) + 0.15 * (race == "Black"), 0.5, 1.0)
    risk[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame({"risk": risk, "race": race, "sex": sex, "n_records": rng.integers(1, 5, n)})


def test_subgroup_table_columns_and_values():
    df = _patients()
    df.loc[5, "sex"] = None
    tab = subgroup_table(df, "risk", ["race", "sex"], risk_threshold=0.7, n_boot=300, seed=1)
    assert list(tab.columns) == TABLE_COLUMNS
    scored = df[df["risk"].notna()]
    assert tab.attrs["n_unscored"] == df["risk"].isna().sum()
    assert tab.attrs["top_k"] == math.ceil(0.01 * len(scored))
    assert set(tab["group"][tab["attribute"] == "sex"]) == {"F", "M", "<NA>"}
    for attr in ("race", "sex"):
        part = tab[tab["attribute"] == attr]
        assert part["units"].sum() == len(scored)
        assert part["top_observed"].sum() == tab.attrs["top_k"]
        assert part["top_expected"].sum() == pytest.approx(tab.attrs["top_k"])
        np.testing.assert_allclose(part["p_holm"], holm_adjust(part["p_value"].to_numpy()))
    row = tab[(tab["attribute"] == "race") & (tab["group"] == "Black")].iloc[0]
    g = scored[scored["race"] == "Black"]
    assert row["units"] == len(g) and row["records"] == g["n_records"].sum()
    assert row["median_risk"] == pytest.approx(g["risk"].median())
    assert row["median_lo"] <= row["median_risk"] <= row["median_hi"]
    assert row["n_above"] == (g["risk"] > 0.7).sum()
    lo, hi = proportion_confint(row["n_above"], row["units"], method="wilson")
    assert (row["share_lo"], row["share_hi"]) == pytest.approx((lo, hi))
    assert row["pearson_residual"] > 0  # the simulated high-risk group
    # deterministic; a group's row does not depend on other attributes
    again = subgroup_table(df, "risk", ["sex", "race"], risk_threshold=0.7, n_boot=300, seed=1)
    key = ["attribute", "group"]
    pd.testing.assert_frame_equal(tab.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True))


def test_subgroup_table_top_set_ties_and_pairs():
    df = pd.DataFrame({"risk": [1.0, 1.0, 1.0, 0.6, 0.5] * 20, "g": ["a", "b", "c", "a", "b"] * 20})
    tab = subgroup_table(df, "risk", ["g"], top_fraction=0.02, n_boot=50, records_col=None)
    # top 2 of 60 tied units at 1.0: the first two rows in frame order (a, b) win
    obs = tab.set_index("group")["top_observed"]
    assert obs.to_dict() == {"a": 1, "b": 1, "c": 0}
    assert (tab["records"] == tab["units"]).all()
    df["h"] = ["x", "y"] * 50
    tab = subgroup_table(df, "risk", ["g", "h"], n_boot=50, pairs=True)
    pair = tab[tab["attribute"] == "g×h"]
    assert len(pair) == 6 and "a×x" in set(pair["group"])
    assert pair["units"].sum() == 100


def test_suppress_small_cells():
    df = _patients(3, 300)
    tab = subgroup_table(df, "risk", ["race", "sex"], n_boot=100)
    out = suppress_small_cells(tab, min_cell=40)
    small = tab["units"] < 40
    assert small.any() and (~small).any()
    assert out["suppressed"].tolist() == small.tolist()
    stats = [c for c in TABLE_COLUMNS if c not in ("attribute", "group")]
    assert out.loc[small, stats].isna().all().all()
    assert out.loc[~small, "units"].tolist() == tab.loc[~small, "units"].tolist()
    assert out.loc[~small, "median_risk"].tolist() == tab.loc[~small, "median_risk"].tolist()
    assert out.loc[small, "group"].tolist() == tab.loc[small, "group"].tolist()
    assert str(out["units"].dtype) == "Int64"
    assert not suppress_small_cells(tab, min_cell=0)["suppressed"].any()
