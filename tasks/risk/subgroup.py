"""Subgroup risk tables (method §4.7, design D16).

One row per (attribute, group) -- and optionally per pair of attributes -- with the group's size,
median risk with a bootstrap CI, the share of units above a risk threshold with a Wilson CI, and the
group's over-representation among the top-risk units (observed vs expected count, Pearson residual,
two-sided Fisher exact p per group, Holm-adjusted within the attribute, and a chi-square
goodness-of-fit p for the attribute as a whole). A *unit* is a patient (default analysis) or a
record (paper comparison).

Groups are always matched by their key (``pandas.factorize`` codes), never by the order in which
counts come out (method pitfall 22). Missing attribute values form their own group ``'<NA>'``.
"""

from __future__ import annotations

import math
import zlib
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import chisquare, fisher_exact, norm

MISSING_GROUP = "<NA>"

TABLE_COLUMNS = [
    "attribute",
    "group",
    "units",
    "records",
    "median_risk",
    "median_lo",
    "median_hi",
    "n_above",
    "share_above",
    "share_lo",
    "share_hi",
    "top_observed",
    "top_expected",
    "pearson_residual",
    "p_value",
    "p_holm",
    "chi2_p",
]


def wilson_ci(k: np.ndarray, n: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k / n, vectorised.

    k, n broadcast (any shape) -> (lo, hi) float64 arrays of that shape, within [0, 1]; NaN where
    n == 0. Equals ``statsmodels.stats.proportion.proportion_confint(k, n, alpha, method='wilson')``.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = norm.isf(alpha / 2.0)
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z2 / n
        center = (p + z2 / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo = np.where(n > 0, np.clip(center - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(center + half, 0.0, 1.0), np.nan)
    return lo, hi


def _bootstrap_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot draws from the bootstrap distribution of the median of sorted x (n,) -> (n_boot,)."""
    n = x.size

    def pick(u: np.ndarray) -> np.ndarray:
        return x[np.minimum(np.floor(n * u).astype(np.int64), n - 1)]

    if n % 2:
        k = (n + 1) // 2
        return pick(rng.beta(k, n - k + 1, size=n_boot))
    k = n // 2
    u1 = rng.beta(k, n - k + 1, size=n_boot)
    u2 = u1 + (1.0 - u1) * rng.beta(1, n - k, size=n_boot)
    return 0.5 * (pick(u1) + pick(u2))


def bootstrap_median_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median; NaN values are dropped; (nan, nan) if none are left.

    values (n,) -> (lo, hi). The ``n_boot`` bootstrap medians are drawn *exactly from the bootstrap
    distribution* without materialising resamples: a resample of size n is ``x_sorted[floor(n U_i)]``
    for i.i.d. uniform U_i, so its median is ``x_sorted[floor(n U_(k))]`` (odd n, k = (n+1)/2; for
    even n the mean of the k-th and (k+1)-th, k = n/2), and the order statistics of uniforms are
    sampled directly (``U_(k) ~ Beta(k, n-k+1)``, ``U_(k+1) = U_(k) + (1 - U_(k)) Beta(1, n-k)``). This
    is the ordinary percentile bootstrap in distribution, at O(n_boot + n log n) cost, so CIs for
    groups of 10^5-10^6 patients are cheap. Deterministic given ``seed``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    x = np.sort(v[~np.isnan(v)])
    if x.size == 0:
        return float("nan"), float("nan")
    med = _bootstrap_medians(x, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(med, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (= statsmodels ``multipletests(p, method='holm')[1]``).

    p (m,) -> (m,) float64; NaN entries stay NaN and do not count towards m.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.minimum(np.maximum.accumulate((m - np.arange(m)) * q[order]), 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def _factorize(groups: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes (P,) and unique keys, sorted when the keys are sortable; NaN is a key."""
    s = pd.Series(np.asarray(groups, dtype=object) if not isinstance(groups, pd.Series) else groups)
    try:
        codes, uniques = pd.factorize(s, sort=True, use_na_sentinel=False)
    except TypeError:
        codes, uniques = pd.factorize(s, sort=False, use_na_sentinel=False)
    return np.asarray(codes), np.asarray(uniques, dtype=object)


def overrepresentation(groups: np.ndarray, top: np.ndarray) -> pd.DataFrame:
    """Over-representation of each group in a top set.

    groups: (P,) group labels; top: (P,) bool (unit in the top set). One row per group with columns
    ``group, n, observed, expected (= n |top| / P), pearson_residual ((obs - exp) / sqrt(exp)),
    p_value`` (two-sided Fisher exact test of [group vs rest] x [top vs not], every group),
    ``p_holm`` (Holm over the groups) and ``chi2_p`` (chi-square goodness-of-fit of the observed
    group counts in the top set against the expected ones, ``scipy.stats.chisquare``; same value on
    every row; NaN with fewer than 2 groups or an empty top set).
    """
    t = np.asarray(top, dtype=bool).ravel()
    codes, keys = _factorize(groups)
    if codes.shape != t.shape:
        raise ValueError("groups and top must have the same length")
    g = keys.size
    total = t.size
    k = int(t.sum())
    n = np.bincount(codes, minlength=g).astype(np.int64)
    obs = np.bincount(codes[t], minlength=g).astype(np.int64)
    exp = n * (k / total) if total else np.full(g, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = (obs - exp) / np.sqrt(exp)
    pvals = np.array(
        [fisher_exact([[obs[i], n[i] - obs[i]], [k - obs[i], total - n[i] - k + obs[i]]]).pvalue for i in range(g)],
        dtype=np.float64,
    )
    chi2_p = float(chisquare(obs, exp).pvalue) if (g >= 2 and k > 0) else float("nan")
    return pd.DataFrame(
        {
            "group": keys,
            "n": n,
            "observed": obs,
            "expected": exp,
            "pearson_residual": resid,
            "p_value": pvals,
            "p_holm": holm_adjust(pvals),
            "chi2_p": chi2_p,
        }
    )


def group_labels(col: pd.Series) -> np.ndarray:
    """Attribute values as strings; missing values -> '<NA>'."""
    vals = col.astype(object).to_numpy()
    miss = pd.isna(col).to_numpy()
    return np.array([MISSING_GROUP if m else str(v) for v, m in zip(vals, miss, strict=True)], dtype=object)


def _stable_seed(seed: int, *parts: str) -> int:
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(p.encode("utf-8")) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _attribute_rows(
    name: str,
    labels: np.ndarray,
    risk: np.ndarray,
    records: np.ndarray,
    top: np.ndarray,
    risk_threshold: float,
    n_boot: int,
    alpha: float,
    seed: int,
) -> list[dict[str, object]]:
    over = overrepresentation(labels, top)
    codes, keys = _factorize(labels)
    # overrepresentation factorises the same labels the same way; still align by key, not position.
    over = over.set_index("group")
    rows = []
    for ci, key in enumerate(keys):
        sel = codes == ci
        r = risk[sel]
        units = int(sel.sum())
        n_above = int(np.sum(r > risk_threshold))
        lo, hi = wilson_ci(n_above, units, alpha)
        mlo, mhi = bootstrap_median_ci(r, n_boot=n_boot, alpha=alpha, seed=_stable_seed(seed, name, str(key)))
        o = over.loc[key]
        rows.append(
            {
                "attribute": name,
                "group": str(key),
                "units": units,
                "records": int(records[sel].sum()),
                "median_risk": float(np.median(r)),
                "median_lo": mlo,
                "median_hi": mhi,
                "n_above": n_above,
                "share_above": n_above / units,
                "share_lo": float(lo),
                "share_hi": float(hi),
                "top_observed": int(o["observed"]),
                "top_expected": float(o["expected"]),
                "pearson_residual": float(o["pearson_residual"]),
                "p_value": float(o["p_value"]),
                "p_holm": float(o["p_holm"]),
                "chi2_p": float(o["chi2_p"]),
            }
        )
    return rows


def subgroup_table(
    frame: pd.DataFrame,
    risk_col: str,
    attributes: list[str],
    *,
    risk_threshold: float = 0.9,
    top_fraction: float = 0.01,
    n_boot: int = 1000,
    seed: int = 0,
    records_col: str | None = "n_records",
    pairs: bool = False,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Subgroup risk table (design D16).

    frame: one row per unit (patient or record) with ``risk_col`` (float; NaN = unscored) and the
    ``attributes`` columns. Units with a NaN risk are excluded from every statistic and counted in
    ``table.attrs['n_unscored']``.

    * Top set: the ``ceil(top_fraction * n_scored)`` scored units with the highest risk; ties at the
      boundary are broken by a stable sort, i.e. the unit that comes first in ``frame`` wins (give
      the frame a deterministic order, e.g. sorted by patient key).
    * ``n_above``: units with risk strictly greater than ``risk_threshold``; ``share_lo/hi``: Wilson.
    * ``median_lo/hi``: percentile bootstrap (:func:`bootstrap_median_ci`), seeded per
      (attribute, group) from ``seed``, so a row does not change when other groups change.
    * ``records``: sum of ``records_col`` over the group's scored units if that column exists, else
      the unit count (record-level tables).
    * With ``pairs=True`` every pair of attributes a, b adds rows with attribute ``'a×b'`` and group
      ``'ga×gb'``.
    * ``p_holm`` is Holm-adjusted within each attribute (or pair); ``chi2_p`` is the attribute's
      chi-square goodness-of-fit p of the top-set composition.

    Returns the columns of ``TABLE_COLUMNS``; rows ordered by attribute (as given, then pairs) and
    group key. ``attrs`` holds ``n_units, n_scored, n_unscored, top_k, risk_threshold, top_fraction``.
    """
    missing = [c for c in [risk_col, *attributes] if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in frame: {missing}")
    risk_all = pd.to_numeric(frame[risk_col], errors="coerce").to_numpy(dtype=np.float64)
    scored = ~np.isnan(risk_all)
    sub = frame.loc[scored]
    risk = risk_all[scored]
    n = risk.size
    top_k = min(n, math.ceil(top_fraction * n - 1e-9)) if n else 0
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-risk, kind="stable")[:top_k]] = True
    if records_col is not None and records_col in sub.columns:
        records = pd.to_numeric(sub[records_col], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    else:
        records = np.ones(n, dtype=np.int64)

    labels = {a: group_labels(sub[a]) for a in attributes}
    units: list[tuple[str, np.ndarray]] = [(a, labels[a]) for a in attributes]
    if pairs:
        for a, b in combinations(attributes, 2):
            lab = np.array([f"{x}×{y}" for x, y in zip(labels[a], labels[b], strict=True)], dtype=object)
            units.append((f"{a}×{b}", lab))
    rows: list[dict[str, object]] = []
    if n:
        for name, lab in units:
            rows.extend(_attribute_rows(name, lab, risk, records, top, risk_threshold, n_boot, alpha, seed))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table.attrs.update(
        {
            "n_units": len(frame),
            "n_scored": int(n),
            "n_unscored": int(len(frame) - n),
            "top_k": int(top_k),
            "risk_threshold": float(risk_threshold),
            "top_fraction": float(top_fraction),
        }
    )
    return table


def suppress_small_cells(table: pd.DataFrame, min_cell: int = 10, count_col: str = "units") -> pd.DataFrame:
    """Small-cell suppression for exported tables.

    Rows whose ``count_col`` is < ``min_cell`` keep their identifying columns (non-numeric ones such as
    ``attribute``, ``group``) but every numeric column -- statistics and counts alike -- is blanked:
    floats become NaN, integer counts become missing (the count columns are converted to the nullable
    ``Int64`` dtype, written as NULL / None). A boolean column ``suppressed`` marks the rows.
    Note this is primary suppression only: a suppressed count may still be recoverable by differencing
    from totals or from the pair rows; export totals with care.
    """
    out = table.copy()
    cnt = pd.to_numeric(out[count_col], errors="coerce")
    small = (cnt < min_cell).fillna(False).to_numpy(dtype=bool)
    for col in out.columns:
        if col == "suppressed":
            continue
        dtype = out[col].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            continue
        if pd.api.types.is_integer_dtype(dtype):
            out[col] = out[col].astype("Int64")
            out.loc[small, col] = pd.NA
        else:
            out[col] = out[col].astype(np.float64)
            out.loc[small, col] = np.nan
    out["suppressed"] = small
    return out
