"""Per-record attack success: analytic binormal AUC, Hanley-McNeil SE, empirical AUC (method §4.4, design D13).

For record n, the models of the pool split into IN (trained on the record's patient) and OUT. The
record's membership is as exposed as the two score distributions are separable:

* ``auc_raw = Phi((mu_in - mu_out) / sqrt(sd_in^2 + sd_out^2))`` -- binormal AUC, *not* clipped;
* ``auc = clip(auc_raw, 0.5, 1.0)`` -- the paper's risk value (an attacker can always flip a test);
* ``auc_se`` -- Hanley & McNeil (1982) standard error at A = ``auc`` with N_in = n_in, N_out = n_out;
* ``auc_empirical`` -- Mann-Whitney AUC of the per-model view-averaged scores (ties count 1/2), the
  distribution-free cross-check.

Which models count for a record: a model contributes to record n only if *all* its V view scores
for n are finite. Statistics are then per view over those models and averaged over views (as the
paper does), so every view of a record uses the same model set and ``n_in`` / ``n_out`` are integers.

Note that the binormal statistics are per view and then averaged, while ``auc_empirical`` ranks the
view-averaged scores; with V > 1 views that carry independent noise the empirical AUC is therefore
somewhat higher (averaging views sharpens both distributions). With one view, or views that agree,
both estimate the same AUC.

Degenerate records are flagged, never silently turned into numbers:

* ``'too_few_models'``: ``n_in < min_per_side`` or ``n_out < min_per_side``; every AUC / SE column is
  NaN (means and stds are still reported where defined).
* ``'zero_variance'``: every IN and every OUT score is constant per view (checked exactly, as
  max == min, not through a rounded variance). If ``mu_in == mu_out`` all AUC / SE columns are NaN;
  otherwise the separation is perfect: ``auc_raw`` = 1.0 (or 0.0), ``auc_empirical`` = 1.0 (0.0) and
  ``auc_se`` = 0.

Everything is vectorised over records; large inputs are processed in blocks of records so the extra
memory stays a small multiple of one block (not of the whole input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import nctdtrinc, ndtr

FLAG_TOO_FEW = "too_few_models"
FLAG_ZERO_VAR = "zero_variance"

# Elements (records x models x views) handled per block by the vectorised kernels.
_BLOCK_ELEMENTS = 4_000_000

_COLUMNS = [
    "n_in",
    "n_out",
    "mu_in",
    "mu_out",
    "sd_in",
    "sd_out",
    "auc_raw",
    "auc",
    "auc_se",
    "auc_empirical",
    "flag",
]


def binormal_auc(mu_in: np.ndarray, mu_out: np.ndarray, sd_in: np.ndarray, sd_out: np.ndarray) -> np.ndarray:
    """Binormal AUC ``Phi((mu_in - mu_out) / sqrt(sd_in^2 + sd_out^2))``, unclipped.

    All inputs broadcast together (typically (N,)); returns float64 of the broadcast shape.
    With both stds zero the limit is returned: 1.0 if mu_in > mu_out, 0.0 if mu_in < mu_out,
    NaN if equal. NaN inputs give NaN.
    """
    mu_in, mu_out, sd_in, sd_out = (np.asarray(v, dtype=np.float64) for v in (mu_in, mu_out, sd_in, sd_out))
    denom = np.hypot(sd_in, sd_out)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mu_in - mu_out) / denom
    return np.asarray(ndtr(z), dtype=np.float64)


def hanley_mcneil_se(auc: np.ndarray, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
    """Hanley & McNeil (1982) standard error of an AUC.

    auc, n_in, n_out broadcast together (typically (N,)); returns float64 of that shape::

        Q0 = A / (2 - A),  Q1 = 2 A^2 / (1 + A)
        SE = sqrt([A(1-A) + (N_in - 1)(Q0 - A^2) + (N_out - 1)(Q1 - A^2)] / (N_in N_out))

    NaN where A is NaN or N_in * N_out == 0. Tiny negative variances from rounding (A -> 1) are
    clipped to 0.
    """
    a = np.asarray(auc, dtype=np.float64)
    n1 = np.asarray(n_in, dtype=np.float64)
    n0 = np.asarray(n_out, dtype=np.float64)
    q0 = a / (2.0 - a)
    q1 = 2.0 * a * a / (1.0 + a)
    a2 = a * a
    num = a * (1.0 - a) + (n1 - 1.0) * (q0 - a2) + (n0 - 1.0) * (q1 - a2)
    den = n1 * n0
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(den > 0, num / den, np.nan)
    var = np.where(var < 0.0, 0.0, var)  # NaN stays NaN
    return np.sqrt(var)


def _as_3d(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim == 2:
        s = s[:, :, None]
    if s.ndim != 3:
        raise ValueError(f"scores must have shape (M, N, V), got {s.shape}")
    return s


def _side_stats(x0: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-view mean/std (ddof 0) over the models selected by w, averaged over views.

    x0: (n, V, M) scores with invalid entries set to 0; x: same with NaN; w: (n, M) bool.
    Returns count (n,) int64, mu (n,), sd (n,), constant (n,) bool (max == min in every view).
    """
    cnt = w.sum(axis=1)
    wf = w.astype(np.float64)
    wv = w[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_v = np.einsum("nvm,nm->nv", x0, wf) / cnt[:, None]
        dev = x0 - mu_v[:, :, None]
        var_v = np.einsum("nvm,nvm,nm->nv", dev, dev, wf) / cnt[:, None]
    hi = np.where(wv, x, -np.inf).max(axis=2)
    lo = np.where(wv, x, np.inf).min(axis=2)
    const_v = (hi == lo) & (cnt[:, None] > 0)
    mu_v = np.where(const_v, lo, mu_v)
    sd_v = np.where(const_v, 0.0, np.sqrt(var_v))
    return cnt, mu_v.mean(axis=1), sd_v.mean(axis=1), const_v.all(axis=1)


def _mann_whitney(xbar: np.ndarray, valid: np.ndarray, w_in: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per record with average ranks for ties.

    xbar: (n, M) view-averaged scores; valid: (n, M) bool; w_in: (n, M) bool (IN and valid).
    Returns (n,) AUC = P(IN > OUT) + P(IN == OUT) / 2 among valid models; NaN if a side is empty.
    """
    n, m = xbar.shape
    key = np.where(valid, xbar, np.inf)  # invalid models sort last and never touch valid ranks
    order = np.argsort(key, axis=1, kind="stable")
    ks = np.take_along_axis(key, order, axis=1)
    new = np.ones((n, m), dtype=bool)
    new[:, 1:] = ks[:, 1:] != ks[:, :-1]
    last = np.ones((n, m), dtype=bool)
    last[:, :-1] = new[:, 1:]
    idx = np.broadcast_to(np.arange(m), (n, m))
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, idx, m - 1)[:, ::-1], axis=1)[:, ::-1]
    avg_rank = (start + end) * 0.5 + 1.0
    in_sorted = np.take_along_axis(w_in, order, axis=1)
    r_in = np.where(in_sorted, avg_rank, 0.0).sum(axis=1)
    n1 = w_in.sum(axis=1).astype(np.float64)
    n0 = valid.sum(axis=1) - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        return (r_in - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)


def _block_statistics(s: np.ndarray, in_mask: np.ndarray, min_per_side: int) -> dict[str, np.ndarray]:
    """record_statistics for one block: s (M, n, V), in_mask (M, n) -> dict of (n,) arrays."""
    x = np.ascontiguousarray(s.transpose(1, 2, 0), dtype=np.float64)  # (n, V, M)
    inn = np.ascontiguousarray(in_mask.T)  # (n, M)
    valid = np.isfinite(x).all(axis=1)
    x0 = np.where(valid[:, None, :], x, 0.0)
    w_in = valid & inn
    w_out = valid & ~inn
    n_in, mu_in, sd_in, const_in = _side_stats(x0, x, w_in)
    n_out, mu_out, sd_out, const_out = _side_stats(x0, x, w_out)

    too_few = (n_in < min_per_side) | (n_out < min_per_side)
    zero_var = ~too_few & const_in & const_out
    same = zero_var & (mu_in == mu_out)

    auc_raw = binormal_auc(mu_in, mu_out, sd_in, sd_out)
    auc_raw[zero_var] = np.where(mu_in[zero_var] > mu_out[zero_var], 1.0, 0.0)
    auc = np.clip(auc_raw, 0.5, 1.0)
    se = hanley_mcneil_se(auc, n_in, n_out)
    se[zero_var] = 0.0
    with np.errstate(invalid="ignore"):
        emp = _mann_whitney(x0.mean(axis=1), valid, w_in)

    dead = too_few | same
    for arr in (auc_raw, auc, se, emp):
        arr[dead] = np.nan
    flag = np.full(x.shape[0], "", dtype=object)
    flag[zero_var] = FLAG_ZERO_VAR
    flag[too_few] = FLAG_TOO_FEW
    return {
        "n_in": n_in.astype(np.int64),
        "n_out": n_out.astype(np.int64),
        "mu_in": mu_in,
        "mu_out": mu_out,
        "sd_in": sd_in,
        "sd_out": sd_out,
        "auc_raw": auc_raw,
        "auc": auc,
        "auc_se": se,
        "auc_empirical": emp,
        "flag": flag,
    }


def record_statistics(scores: np.ndarray, in_mask: np.ndarray, min_per_side: int = 2) -> pd.DataFrame:
    """Per-record IN/OUT statistics and AUCs over a pool of models.

    scores: (M, N, V) float (NaN = model did not score the record; a (M, N) array means V = 1).
    in_mask: (M, N) bool, True where model m was trained on record n.
    min_per_side: smallest number of scoring models per side for an AUC (>= 1).

    Returns a DataFrame with N rows (index 0..N-1, the record positions) and columns
    ``n_in, n_out`` (int64), ``mu_in, mu_out, sd_in, sd_out, auc_raw, auc, auc_se, auc_empirical``
    (float64) and ``flag`` (str: '', 'too_few_models' or 'zero_variance'); see the module docstring.
    """
    s = _as_3d(scores)
    mask = np.asarray(in_mask, dtype=bool)
    m, n, v = s.shape
    if mask.shape != (m, n):
        raise ValueError(f"in_mask must have shape {(m, n)}, got {mask.shape}")
    if min_per_side < 1:
        raise ValueError("min_per_side must be >= 1")
    block = max(1, _BLOCK_ELEMENTS // max(1, m * v))
    parts: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
    for a in range(0, n, block):
        res = _block_statistics(s[:, a : a + block], mask[:, a : a + block], min_per_side)
        for c in _COLUMNS:
            parts[c].append(res[c])
    cols = {c: (np.concatenate(parts[c]) if parts[c] else np.empty(0, dtype=object if c == "flag" else float)) for c in _COLUMNS}
    if n == 0:
        cols["n_in"] = cols["n_in"].astype(np.int64)
        cols["n_out"] = cols["n_out"].astype(np.int64)
    out = pd.DataFrame(cols, columns=_COLUMNS)
    out["flag"] = out["flag"].astype(str)
    return out


def _scope_name(top_quantile: float) -> str:
    return f"top{round((1.0 - top_quantile) * 100, 6):g}pct"


def se_vs_model_count(
    scores: np.ndarray,
    in_mask: np.ndarray,
    model_counts: Sequence[int] = (20, 50, 100, 200),
    seed: int = 0,
    top_quantile: float = 0.99,
) -> pd.DataFrame:
    """How the per-record SE shrinks with the number of models (method §4.11, design D17).

    scores: (M, N, V), in_mask: (M, N) bool, as in :func:`record_statistics`.

    For each total count c, every record gets c // 2 IN and c // 2 OUT models drawn at random
    (without replacement, independently per record, from its models with finite scores; seeded by
    ``seed``), and AUC and SE are recomputed from those models only.

    Feasibility: a record with fewer than c // 2 scoring models on either side is left out of that
    count's rows (``n_records`` says how many records were used); a count that no record can supply
    is skipped entirely. In a complete balanced pool of M models every count <= M is feasible for
    every record.

    Scopes: ``'all'`` (every used record) and ``'top1pct'`` (records whose full-pool ``auc`` is
    >= the ``top_quantile`` quantile of full-pool AUCs; the same records are followed across
    counts -- the paper picked them per count; the name follows ``top_quantile``, e.g. 0.95 ->
    ``'top5pct'``).

    Returns one row per (feasible count, scope) with columns
    ``n_models, scope, n_records, se_median, se_p90, se_max, auc_median`` (NaN SEs are ignored).
    """
    s = _as_3d(scores)
    mask = np.asarray(in_mask, dtype=bool)
    m, n, v = s.shape
    if mask.shape != (m, n):
        raise ValueError(f"in_mask must have shape {(m, n)}, got {mask.shape}")
    full = record_statistics(s, mask)
    auc_full = full["auc"].to_numpy()
    finite_auc = np.isfinite(auc_full)
    thr = np.quantile(auc_full[finite_auc], top_quantile) if finite_auc.any() else np.nan
    top = finite_auc & (auc_full >= thr)
    n_in_all = full["n_in"].to_numpy()
    n_out_all = full["n_out"].to_numpy()

    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(1, m * v))
    rows: list[dict[str, object]] = []
    scope = _scope_name(top_quantile)
    for c in model_counts:
        k = int(c) // 2
        if k < 1:
            continue
        eligible = (n_in_all >= k) & (n_out_all >= k)
        if not eligible.any():
            continue
        auc_c = np.full(n, np.nan)
        se_c = np.full(n, np.nan)
        for a in range(0, n, block):
            sb = s[:, a : a + block]
            mb = mask[:, a : a + block]
            valid = np.isfinite(sb).all(axis=2)
            keys = rng.random(mb.shape)
            sel = np.zeros(mb.shape, dtype=bool)
            for side in (mb, ~mb):
                ks = np.where(valid & side, keys, np.inf)
                kth = np.partition(ks, k - 1, axis=0)[k - 1]
                sel |= ks <= kth[None, :]
            sub = np.where(sel[:, :, None], sb, np.nan)
            st = record_statistics(sub, mb, min_per_side=min(2, k))
            auc_c[a : a + block] = st["auc"].to_numpy()
            se_c[a : a + block] = st["auc_se"].to_numpy()
        for name, in_scope in (("all", eligible), (scope, eligible & top)):
            se_v = se_c[in_scope & np.isfinite(se_c)]
            auc_v = auc_c[in_scope & np.isfinite(auc_c)]
            rows.append(
                {
                    "n_models": 2 * k,
                    "scope": name,
                    "n_records": int(in_scope.sum()),
                    "se_median": float(np.median(se_v)) if se_v.size else np.nan,
                    "se_p90": float(np.quantile(se_v, 0.9)) if se_v.size else np.nan,
                    "se_max": float(se_v.max()) if se_v.size else np.nan,
                    "auc_median": float(np.median(auc_v)) if auc_v.size else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=["n_models", "scope", "n_records", "se_median", "se_p90", "se_max", "auc_median"])


def auc_interval_nct(
    mu_in: np.ndarray,
    mu_out: np.ndarray,
    sd_in: np.ndarray,
    sd_out: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact binormal (equal-variance) confidence interval of a record's risk ``max(AUC, 0.5)``.

    All inputs (N,), with ddof-0 stds as in :func:`record_statistics`. With the pooled unbiased std
    ``s_p`` and ``t = (mu_in - mu_out) / (s_p sqrt(1/n_in + 1/n_out))``, t follows a noncentral t with
    ``n_in + n_out - 2`` degrees of freedom and noncentrality ``delta / sqrt(1/n_in + 1/n_out)``, where
    ``delta = (mu_IN - mu_OUT) / sigma`` and the AUC is ``Phi(delta / sqrt(2))``. Inverting the noncentral t
    (``scipy.special.nctdtrinc``) bounds delta, hence the AUC; the interval is exact for normal scores at
    any n and does not collapse at AUC 1 (unlike Hanley-McNeil). Both ends are clipped at 0.5 like the risk.
    Returns (lo, hi) (N,) float64; NaN where n_in + n_out < 3 or the pooled std is 0 or not finite.
    """
    n1 = np.asarray(n_in, dtype=np.float64)
    n0 = np.asarray(n_out, dtype=np.float64)
    df = n1 + n0 - 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sp = np.sqrt((n1 * np.asarray(sd_in, dtype=np.float64) ** 2 + n0 * np.asarray(sd_out, dtype=np.float64) ** 2) / df)
        scale = np.sqrt(1.0 / n1 + 1.0 / n0)
        t = (np.asarray(mu_in, dtype=np.float64) - np.asarray(mu_out, dtype=np.float64)) / (sp * scale)
    ok = (df >= 1) & np.isfinite(t) & (sp > 0)
    lo = np.full(t.shape, np.nan)
    hi = np.full(t.shape, np.nan)
    alpha = 1.0 - confidence
    lam_lo = nctdtrinc(df[ok], 1.0 - alpha / 2.0, t[ok])
    lam_hi = nctdtrinc(df[ok], alpha / 2.0, t[ok])
    lo[ok] = np.maximum(ndtr(lam_lo * scale[ok] / np.sqrt(2.0)), 0.5)
    hi[ok] = np.maximum(ndtr(lam_hi * scale[ok] / np.sqrt(2.0)), 0.5)
    return lo, hi
