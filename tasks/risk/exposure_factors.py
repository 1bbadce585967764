"""Who is exposed and why: disease groups, rarity and atypicality (method §4.7; docs/STATISTICS.md).

Arrays in, frames out; no Prefect, Dask or DuckDB here.

* **Label groups** (multi-label tasks): one row per label; a unit (patient or record) belongs to a
  label's group when it carries the label (a patient: when *any* of their records does), so groups
  overlap and a chi-square over them would be invalid. Each label gets its own 2x2 test instead:
  expected top-set count = group size x top-set size / units (= label prevalence x top-n), Pearson
  residual, two-sided Fisher exact p, Holm across the labels; ``chi2_p`` is left empty.
* **Rarity** of a record: the training-split prevalence of its rarest positive label (a record without
  any positive label: the prevalence of label vectors without any). For single-label tasks this is the
  prevalence of the record's class.
* **Atypicality** of a record: how badly the models that never saw it fit it, at no extra training
  cost: ``-(mu_out - mean_g) / sd_g``, where ``mu_out`` is the record's mean OUT-model score (higher =
  the models are more confident of its true labels) and ``g`` its label combination among the
  training records (combinations with fewer than ``MIN_GROUP`` records are standardised together).
  Higher = more atypical for its labels.
* **Patients**: a patient's rarity is that of the record that sets their risk (their most exposed
  record), their atypicality that of their record with the highest cross-fitted risk; see
  :func:`value_at_max` for why not the rarest or most atypical of their records.
* **Cross-fitting.** The record AUC uses every OUT model, so a record whose OUT mean came out low by
  chance looks both more atypical and more exposed: relating the two on the same models manufactures a
  correlation where there is none. So the OUT models are split by pool position (even / odd): the
  atypicality uses the mean of the even half, and every test of risk against atypicality uses
  ``auc_crossfit``, the binormal AUC of the IN models against the odd half only. Disjoint models, so
  under the null the two are independent (tests/risk/test_exposure_factors.py checks the null rate).
* **Enrichment tests**: is a set of units (the rarest bins, the most atypical decile) over-represented
  among the exposed units? One-sided Fisher exact test of [in set vs not] x [exposed vs not]
  (hypergeometric, exact given the margins); expected = exposed x share of units in the set.
* **Rank correlation** of risk and atypicality: Spearman's rho with a 95% interval from Fisher's z
  with the Bonett-Wright standard error ``sqrt((1 + rho^2 / 2) / (n - 3))``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, norm, spearmanr

from tasks.attacks.record_auc import record_statistics
from tasks.risk.subgroup import holm_adjust, subgroup_table, wilson_ci

# Subgroup-table row kinds (the ``kind`` column of subgroup_stats).
KIND_DEMOGRAPHIC = "demographic"
KIND_LABEL = "label"
KIND_RARITY = "rarity"
KIND_ATYPICALITY = "atypicality"
# Contract subgroup attributes that are disease groups of single-label datasets (FairVision and
# Fitzpatrick17k diagnosis, EMBED density and BI-RADS assessment, MIMIC-IV-ED comorbidities and outcome).
DISEASE_ATTRIBUTES = frozenset({"disease", "density", "assessment", "cancer", "obesity", "hospitalized"})
LABEL_ATTRIBUTE = "label"
RARITY_ATTRIBUTE = "rarity"
ATYPICALITY_ATTRIBUTE = "atypicality"
# Rarity bins on the training prevalence of the record's rarest label; the first two are "rare".
RARITY_EDGES = (0.0, 0.01, 0.05, 0.2, 1.0 + 1e-12)
RARITY_LABELS = ("1: <1%", "2: 1-5%", "3: 5-20%", "4: >=20%")
RARE_PREVALENCE = 0.05
N_ATYPICALITY_BINS = 10
MIN_GROUP = 10
NO_LABEL = "(none)"


def attribute_kind(attribute: str) -> str:
    """'label' for a disease attribute (or a pair involving one), else 'demographic'."""
    return KIND_LABEL if any(part in DISEASE_ATTRIBUTES for part in attribute.split("×")) else KIND_DEMOGRAPHIC


def label_sets(labels: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N, C) labels (> 0.5 = positive) -> (N,) object array of 'A+B' strings ('(none)' if no label)."""
    pos = np.asarray(labels, dtype=np.float64) > 0.5
    return np.array(["+".join(n for n, p in zip(names, row, strict=True) if p) or NO_LABEL for row in pos], dtype=object)


def label_prevalence(labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Rarity: training prevalence of each record's rarest positive label.

    labels (N, C) (> 0.5 = positive), train (N,) bool -> (N,) float64 in [0, 1]. A record without a
    positive label gets the training share of records without one. NaN if there are no training records.
    """
    pos = np.asarray(labels, dtype=np.float64) > 0.5
    tr = np.asarray(train, dtype=bool)
    n_train = int(tr.sum())
    if n_train == 0:
        return np.full(len(pos), np.nan)
    per_label = pos[tr].sum(axis=0) / n_train  # (C,)
    none = ~pos.any(axis=1)
    rarest = np.where(pos, per_label[None, :], np.inf).min(axis=1)
    return np.where(none, none[tr].sum() / n_train, rarest)


def atypicality(mu_out: np.ndarray, labels: np.ndarray, min_group: int = MIN_GROUP) -> np.ndarray:
    """Standardised OUT-model misfit within the label combination: (N,) float64, NaN where mu_out is.

    mu_out (N,) mean OUT-model score of each record (higher = better fit), labels (N, C). Groups
    (exact label vectors) with fewer than ``min_group`` finite values are pooled into one group; a
    group with zero spread gives 0.
    """
    mu = np.asarray(mu_out, dtype=np.float64)
    pos = np.asarray(labels, dtype=np.float64) > 0.5
    _, codes = np.unique(pos, axis=0, return_inverse=True) if len(pos) else (None, np.zeros(0, dtype=np.int64))
    codes = np.asarray(codes).ravel()
    ok = np.isfinite(mu)
    counts = np.bincount(codes[ok], minlength=codes.max() + 1 if len(codes) else 0)
    pooled = counts[codes] < min_group
    codes = np.where(pooled, -1, codes)
    out = np.full(len(mu), np.nan)
    for g in np.unique(codes[ok]):
        sel = ok & (codes == g)
        x = mu[sel]
        sd = x.std(ddof=1) if x.size > 1 else 0.0
        out[sel] = -(x - x.mean()) / sd if sd > 0 else 0.0
    return out


def crossfit_statistics(scores: np.ndarray, in_mask: np.ndarray, min_per_side: int = 2) -> pd.DataFrame:
    """OUT-half statistics for the cross-fitted atypicality (module docstring).

    scores (M, N, V) or (M, N), in_mask (M, N) bool, as for ``record_statistics``. Returns N rows:
    ``mu_out_half`` (mean score of the OUT models at even pool positions, averaged over views; NaN with
    fewer than ``min_per_side`` of them) and ``auc_crossfit`` (clipped binormal AUC of the IN models against
    the OUT models at odd positions; NaN where ``record_statistics`` gives none).
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[:, :, None] if s.ndim == 2 else s
    mask = np.asarray(in_mask, dtype=bool)
    even = (np.arange(s.shape[0]) % 2 == 0)[:, None]
    valid = np.isfinite(s).all(axis=2)
    half_a = valid & ~mask & even
    cnt = half_a.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(half_a[:, :, None], s, 0.0).sum(axis=0).mean(axis=1) / cnt
    mu = np.where(cnt >= min_per_side, mu, np.nan)
    b = record_statistics(np.where((~mask & even)[:, :, None], np.nan, s), mask, min_per_side)
    return pd.DataFrame({"mu_out_half": mu, "auc_crossfit": b["auc"].to_numpy()})


def value_at_max(codes: np.ndarray, by: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    """Per unit (patient), ``values`` of its record with the highest ``by`` (ties: the first record).

    codes (N,) int in [0, n_units), by (N,) float (NaN never wins), values (N,) float -> (n_units,)
    float64, NaN for a unit without a finite ``by``. Used for a patient's rarity and atypicality: those
    of the record that sets their risk. (The rarest or most atypical of their records would grow with
    their number of records, as their maximum risk does, and so be associated with risk by chance.)
    """
    c = np.asarray(codes, dtype=np.int64)
    b = np.asarray(by, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(b))
    order = ok[np.lexsort((-b[ok], c[ok]))]  # by unit, highest first; lexsort is stable
    first = order[np.r_[True, c[order][1:] != c[order][:-1]]] if order.size else order
    out = np.full(n_units, np.nan)
    out[c[first]] = v[first]
    return out


def rarity_bins(prevalence: np.ndarray) -> np.ndarray:
    """(n,) prevalences -> (n,) object array of RARITY_LABELS ('<NA>' for NaN)."""
    p = np.asarray(prevalence, dtype=np.float64)
    idx = np.searchsorted(np.asarray(RARITY_EDGES), p, side="right") - 1
    labels = np.asarray(RARITY_LABELS, dtype=object)
    return np.where(np.isfinite(p), labels[np.clip(idx, 0, len(RARITY_LABELS) - 1)], "<NA>")


def atypicality_bins(values: np.ndarray, n_bins: int = N_ATYPICALITY_BINS) -> np.ndarray:
    """(n,) atypicality -> (n,) object array 'dd/NN' (rank-based bins of equal size; NN = most atypical).

    Ties are broken by position (stable), so bins have sizes differing by at most one; NaN -> '<NA>'.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.size, "<NA>", dtype=object)
    ok = np.flatnonzero(np.isfinite(v))
    if ok.size:
        rank = np.empty(ok.size, dtype=np.int64)
        rank[np.argsort(v[ok], kind="stable")] = np.arange(ok.size)
        b = rank * n_bins // ok.size + 1
        out[ok] = [f"{i:02d}/{n_bins}" for i in b]
    return out


def top_bin(values: np.ndarray, n_bins: int = N_ATYPICALITY_BINS) -> np.ndarray:
    """(n,) bool: the unit is in the most atypical of ``n_bins`` rank bins."""
    return atypicality_bins(values, n_bins) == f"{n_bins:02d}/{n_bins}"


def enrichment(in_set: np.ndarray, exposed: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """Over-representation of a set among exposed units (one-sided Fisher exact, 'greater').

    in_set, exposed: (n,) bool over the same units. Returns n_units, n_exposed, n_in_set, observed
    (exposed units in the set), expected (n_exposed x n_in_set / n_units), share_exposed_in_set with a
    Wilson interval (share_lo, share_hi), share_all_in_set, odds_ratio and p_value (NaN when there is
    no exposed unit or the set is empty or everything).
    """
    s = np.asarray(in_set, dtype=bool)
    e = np.asarray(exposed, dtype=bool)
    n, k, m = s.size, int(e.sum()), int(s.sum())
    obs = int((s & e).sum())
    lo, hi = wilson_ci(obs, k, alpha)
    p = odds = np.nan
    if k and 0 < m < n:
        res = fisher_exact([[obs, m - obs], [k - obs, n - m - k + obs]], alternative="greater")
        p, odds = float(res.pvalue), float(res.statistic)
    return {
        "n_units": n,
        "n_exposed": k,
        "n_in_set": m,
        "observed": obs,
        "expected": k * m / n if n else np.nan,
        "share_exposed_in_set": obs / k if k else np.nan,
        "share_lo": float(lo),
        "share_hi": float(hi),
        "share_all_in_set": m / n if n else np.nan,
        "odds_ratio": odds,
        "p_value": p,
    }


def spearman_ci(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """Spearman's rho of finite pairs with a Fisher-z interval (Bonett-Wright SE) and its p-value."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    nan = {"spearman_n": n, "spearman_rho": np.nan, "spearman_lo": np.nan, "spearman_hi": np.nan, "spearman_p": np.nan}
    if n < 4 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return nan
    res = spearmanr(x[ok], y[ok])
    rho = float(res.statistic)
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    half = norm.isf(alpha / 2) * np.sqrt((1 + rho * rho / 2) / (n - 3))
    lo, hi = float(np.tanh(z - half)), float(np.tanh(z + half))
    return {"spearman_n": n, "spearman_rho": rho, "spearman_lo": lo, "spearman_hi": hi, "spearman_p": float(res.pvalue)}


def label_group_table(
    risk: np.ndarray,
    membership: np.ndarray,
    names: list[str] | tuple[str, ...],
    *,
    records: np.ndarray | None = None,
    risk_threshold: float = 0.9,
    top_fraction: float = 0.01,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    attribute: str = LABEL_ATTRIBUTE,
) -> pd.DataFrame:
    """Overlapping label groups as subgroup-table rows (TABLE_COLUMNS, one row per label with members).

    risk (n,) (NaN = unscored, left out), membership (n, C) bool (unit carries label c), records (n,)
    records per unit (default 1). Each label is run through ``subgroup_table`` as a yes/no attribute
    (same top set: the ``ceil(top_fraction x scored)`` highest risks, stable ties; same Fisher exact
    two-sided p of [in group vs not] x [top vs not]) and its 'yes' row kept; Holm is then applied across
    the labels and ``chi2_p`` left NaN (groups overlap).
    """
    mem = np.asarray(membership, dtype=bool)
    cols = [f"_label{c}" for c in range(mem.shape[1])]
    frame = pd.DataFrame({"_risk": np.asarray(risk, dtype=np.float64), **dict(zip(cols, mem.T, strict=True))})
    if records is not None:
        frame["_records"] = np.asarray(records, dtype=np.int64)
    # each label as its own yes/no attribute: the 'True' row is the label's group, tested against the rest
    table = subgroup_table(
        frame,
        "_risk",
        cols,
        risk_threshold=risk_threshold,
        top_fraction=top_fraction,
        n_boot=n_boot,
        seed=seed,
        records_col=None if records is None else "_records",
        alpha=alpha,
    )
    table = table[table["group"] == "True"].reset_index(drop=True)
    table["group"] = table["attribute"].map(dict(zip(cols, map(str, names), strict=True)))
    table["attribute"] = attribute
    table["p_holm"] = holm_adjust(table["p_value"].to_numpy(dtype=np.float64))
    table["chi2_p"] = np.nan  # groups overlap: no goodness-of-fit over them
    return table


def exposure_tests(
    level: str,
    risk: np.ndarray,
    exposed: np.ndarray,
    prevalence: np.ndarray,
    atyp: np.ndarray,
    risk_crossfit: np.ndarray | None = None,
    exposed_crossfit: np.ndarray | None = None,
) -> pd.DataFrame:
    """The two enrichment tests and the risk-atypicality rank correlation for one level.

    risk, prevalence, atyp (n,) float, exposed (n,) bool. The rarity test uses ``risk`` / ``exposed``;
    the atypicality test and correlation use ``risk_crossfit`` / ``exposed_crossfit`` (default: the same),
    the risk on models disjoint from those behind ``atyp`` (module docstring). Units whose risk is NaN
    are left out of the test that uses it. Returns two rows (factor 'rarity': set = prevalence <
    RARE_PREVALENCE; factor 'atypicality': set = the most atypical rank decile) with the columns of
    :func:`enrichment`, plus ``level, factor, tested`` (the set) and, on the atypicality row, the
    Spearman columns of :func:`spearman_ci`.
    """
    r = np.asarray(risk, dtype=np.float64)
    rc = r if risk_crossfit is None else np.asarray(risk_crossfit, dtype=np.float64)
    e = np.asarray(exposed, dtype=bool)
    ec = e if exposed_crossfit is None else np.asarray(exposed_crossfit, dtype=bool)
    prev = np.asarray(prevalence, dtype=np.float64)
    a = np.asarray(atyp, dtype=np.float64)
    ok, okc = np.isfinite(r), np.isfinite(rc) & np.isfinite(a)
    rare = np.isfinite(prev) & (prev < RARE_PREVALENCE)
    rows = [
        {"level": level, "factor": KIND_RARITY, "tested": f"rarest label prevalence < {RARE_PREVALENCE:g}", **enrichment(rare[ok], e[ok])},
        {
            "level": level,
            "factor": KIND_ATYPICALITY,
            "tested": f"most atypical 1/{N_ATYPICALITY_BINS} (rank bin; cross-fitted risk)",
            **enrichment(top_bin(a[okc]), ec[okc]),
            **spearman_ci(a[okc], rc[okc]),
        },
    ]
    return pd.DataFrame(rows)
